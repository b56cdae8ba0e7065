#!/usr/bin/env bash
# Installs the uv release of requirements/uv.txt (one version, every wheel's hash) into
# .tools/uv/ with pip, unless it is there already; prints the path of its uv.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
uv=.tools/uv/bin/uv
wanted=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/uv.txt)
if [ ! -x "$uv" ] || [ "$("$uv" --version | cut -d' ' -f2)" != "$wanted" ]; then
  "$python" -m venv --clear .tools/uv
  .tools/uv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r requirements/uv.txt >&2
fi
echo "$(pwd)/$uv"
