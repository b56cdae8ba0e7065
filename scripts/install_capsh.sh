#!/usr/bin/env bash
# Installs capsh (Debian's libcap2-bin) for the tests of unreadable files and folders
# (msd_dagster_tests/test_hostile_inputs.py): run as root, they drop the capabilities that let
# root read any file. Never fails: without apt (or without root) it says why and exits 0, and
# those tests are then skipped with the reason. Not needed when the tests run as a normal user.
set -uo pipefail
if command -v capsh >/dev/null 2>&1; then
  echo "capsh present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "not root: the permission tests run as this user, capsh is not needed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not available: cannot install capsh; the permission tests will be skipped"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq libcap2-bin >/dev/null; }; then
  echo "apt-get install libcap2-bin failed; the permission tests will be skipped"
  exit 0
fi
echo "installed capsh (libcap2-bin)"
