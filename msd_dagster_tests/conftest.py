"""Shared fixtures: real database servers, a live S3 endpoint, generated datasets."""

pytest_plugins = [
    "msd_dagster_tests.db_fixtures",
    "msd_dagster_tests.s3_fixtures",
]
