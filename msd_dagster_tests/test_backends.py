"""The backend registry: what a backend contributes to the table definitions, and what it must
leave as it is (the schema fingerprint every existing database has recorded).

No database is needed: everything here is compiled offline.
"""

from __future__ import annotations

from msd_dagster.warehouse.ddl import schema_fingerprint

# The fingerprint recorded in msd_schema_version by every database created since schema
# version 2. It changes only with the table definitions (then SCHEMA_VERSION is bumped too):
# a new backend, or a new column type variant of one, must leave it as it is.
RECORDED_FINGERPRINT = "33cd505f3cbce3278a086edbb9b296d24f65482c59df3abea33540569b0ddca8"


def test_the_fingerprint_is_the_one_existing_databases_recorded() -> None:
    assert schema_fingerprint() == RECORDED_FINGERPRINT
