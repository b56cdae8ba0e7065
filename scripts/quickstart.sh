#!/usr/bin/env bash
# Quick start: install into .venv/ and load the embedded default sample into SQLite through Dagster.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
exec .venv/bin/msd-dagster load "$@"
