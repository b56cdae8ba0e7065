"""Retry policies: transient S3 and database faults are retried with backoff and jitter.

A folder step asks for a retry only when one of its folders failed for a reason that may pass
(see ``load_folders``), so a bad file, a constraint violation or a schema mismatch fails at
once instead of after minutes of backoff; the retry skips the folders already loaded.
"""

import dagster as dg

SOURCE_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# The AdditionalFiles load: one small transaction, cheap to retry whatever the cause.
WAREHOUSE_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
