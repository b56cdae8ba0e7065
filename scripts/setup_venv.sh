#!/usr/bin/env bash
# Creates .venv/ at the repository root with exactly what uv.lock names (hash-checked), and
# msd-dagster itself in editable mode. Extras, if given, are added: runtime only by default.
# Usage: scripts/setup_venv.sh [extra ...]   e.g. scripts/setup_venv.sh test mssql
#
# uv itself comes from requirements/uv.txt (one version, every wheel's hash) into .tools/uv/,
# through pip, so a fresh machine needs nothing but Python 3.11+.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
uv=.tools/uv/bin/uv
wanted=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/uv.txt)
if [ ! -x "$uv" ] || [ "$("$uv" --version | cut -d' ' -f2)" != "$wanted" ]; then
  "$python" -m venv --clear .tools/uv
  .tools/uv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r requirements/uv.txt
fi
extras=()
for extra in "$@"; do extras+=(--extra "$extra"); done
# --locked: fail, rather than re-resolve, when uv.lock no longer matches pyproject.toml.
"$uv" sync --locked --quiet --python "$python" "${extras[@]}"
