#!/usr/bin/env bash
# Installs what the tests need into .venv/ and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh test
.venv/bin/ruff check msd_dagster msd_dagster_tests benchmarks
.venv/bin/ruff format --check msd_dagster msd_dagster_tests benchmarks
# pytest exits 5 when it collects no test: that is a failure here too.
exec .venv/bin/python -m pytest "$@"
