#!/usr/bin/env bash
# Runs the behaviour tests of what msd-dagster builds on Dagster internals
# (msd_dagster_tests/test_dagster_compat.py) against the newest Dagster 1.13.x, in a fresh
# virtual environment, so that an upgrade is a measured decision.
#   scripts/check_dagster_upgrade.sh [VENV_DIR]   (default: .venv-dagster-upgrade)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-dagster-upgrade}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e '.[test]'
# The newest 1.13.x of Dagster and its libraries (the libraries are versioned 0.29.x).
"$venv/bin/pip" install -q --upgrade 'dagster>=1.13,<1.14' 'dagster-webserver>=1.13,<1.14' \
  'dagster-graphql>=1.13,<1.14' 'dagster-postgres>=0.29,<0.30' 'dagster-aws>=0.29,<0.30' \
  'dagster-celery>=0.29,<0.30'
"$venv/bin/python" -c 'import dagster; print("dagster", dagster.__version__)'
"$venv/bin/python" -m pytest msd_dagster_tests/test_dagster_compat.py -q -p no:cacheprovider
