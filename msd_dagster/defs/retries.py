"""Retry policy of the source steps: transient S3 faults are retried with backoff and jitter.

The warehouse step retries only transient database errors (see the warehouse asset), so a
constraint violation or a schema mismatch fails at once instead of after minutes of backoff.
"""

import dagster as dg

SOURCE_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# The AdditionalFiles load: one small transaction, cheap to retry whatever the cause.
WAREHOUSE_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
