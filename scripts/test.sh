#!/usr/bin/env bash
# Installs what the tests need and runs the whole test suite: starts the local PostgreSQL,
# MariaDB and Redis if they are installed but down, installs Debian's Chromium for the browser
# tests and capsh for the permission tests when possible, installs the test extras into .venv/,
# then runs ruff and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/install_browser.sh
bash scripts/install_capsh.sh
scripts/setup_venv.sh test mssql
.venv/bin/ruff check msd_dagster msd_dagster_tests benchmarks
.venv/bin/ruff format --check msd_dagster msd_dagster_tests benchmarks
# pytest exits 5 when it collects no test: that is a failure here too.
exec .venv/bin/python -m pytest "$@"
