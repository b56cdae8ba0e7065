#!/usr/bin/env bash
# Creates .venv/ at the repository root with exactly what uv.lock names (hash-checked), and
# msd-dagster itself in editable mode. Extras, if given, are added: runtime only by default.
# Usage: scripts/setup_venv.sh [extra ...]   e.g. scripts/setup_venv.sh test mssql
#
# uv itself comes from requirements/uv.txt through pip (scripts/install_uv.sh), so a fresh
# machine needs nothing but Python 3.11+.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
uv=$(scripts/install_uv.sh)
extras=()
for extra in "$@"; do extras+=(--extra "$extra"); done
# --locked: fail, rather than re-resolve, when uv.lock no longer matches pyproject.toml.
"$uv" sync --locked --quiet --python "$python" "${extras[@]}"
