#!/usr/bin/env bash
# Re-resolves uv.lock to the newest releases that pyproject.toml's ranges allow, runs the whole
# test suite (ruff and pytest, as scripts/test.sh does) on them in a separate environment, and
# writes the new uv.lock here only when the suite passes. The current .venv/ and uv.lock are
# never touched on failure. Exit 0: upgraded (or already newest); 1: the suite failed.
# Usage: scripts/upgrade_lock.sh [pytest arguments]
#
# The candidate runs in a temporary copy of this working tree, with ../shared beside it as the
# tests expect, and its own .venv/. Keep the copy for a look with MSD_KEEP_UPGRADE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
uv=$(scripts/install_uv.sh) # the pinned uv; .venv/ is left as it is

work=$(mktemp -d "${TMPDIR:-/tmp}/msd-upgrade.XXXXXX")
cleanup() { [ "${MSD_KEEP_UPGRADE:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"; }
trap cleanup EXIT
[ -d ../shared ] && ln -s "$(cd ../shared && pwd)" "$work/shared"
mkdir "$work/repo"
# Tracked and new, not ignored, files: the change under test, without .venv/ and caches.
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/repo"
cd "$work/repo"

"$uv" lock --upgrade 2>&1 | tail -n 1
changes=$(diff <(sed -n '/^name = /{N;s/\n/ /;p}' "$repo/uv.lock") \
               <(sed -n '/^name = /{N;s/\n/ /;p}' uv.lock) | sed -n 's/^> name = //p' || true)
if [ -z "$changes" ]; then
  echo "uv.lock already names the newest releases within the ranges"
  exit 0
fi
echo "candidate upgrades (name, new version):"
echo "$changes" | sed 's/ version = / /; s/"//g; s/^/  /'

if bash scripts/test.sh "$@"; then
  cp uv.lock "$repo/uv.lock"
  echo "the suite passed on the upgraded lock: uv.lock written; run scripts/setup_venv.sh" \
    "test mssql, then commit uv.lock"
else
  echo "the suite failed on the upgraded lock: uv.lock left as it was" >&2
  exit 1
fi
