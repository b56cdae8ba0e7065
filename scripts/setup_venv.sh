#!/usr/bin/env bash
# Creates .venv/ at the repository root and installs msd-dagster into it (with extras, if given).
# Usage: scripts/setup_venv.sh [extra]   e.g. scripts/setup_venv.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
spec="."
if [ -n "${1:-}" ]; then spec=".[$1]"; fi
.venv/bin/python -m pip install --quiet -e "$spec"
