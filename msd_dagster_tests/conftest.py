"""Shared fixtures: real database servers, a live S3 endpoint, generated datasets."""

pytest_plugins = [
    "msd_dagster_tests.db_fixtures",
    "msd_dagster_tests.s3_fixtures",
    "msd_dagster_tests.celery_fixtures",
    "msd_dagster_tests.pipeline_helpers",
    "msd_dagster_tests.ui_fixtures",
]
