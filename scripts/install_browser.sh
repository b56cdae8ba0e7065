#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (msd_dagster_tests/test_ui_browser.py), if
# it is missing. Never fails: without apt (or without root) it says why and exits 0, and the
# browser tests are then skipped with the reason. Playwright's own browser download is not
# used: the tests drive this Chromium through `executable_path`.
set -uo pipefail
chromium=${MSD_CHROMIUM:-/usr/bin/chromium}
if [ -x "$chromium" ]; then
  echo "Chromium present: $("$chromium" --version 2>/dev/null || echo "$chromium")"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not available: cannot install Chromium; the browser tests will be skipped"
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "not root and no password-less sudo: cannot install Chromium; the browser tests will be skipped"
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get update -qq; then
  echo "apt-get update failed: cannot install Chromium; the browser tests will be skipped"
  exit 0
fi
if ! $sudo apt-get install -y -qq chromium >/dev/null; then
  echo "apt-get install chromium failed; the browser tests will be skipped"
  exit 0
fi
if [ -x "$chromium" ]; then
  echo "installed: $("$chromium" --version 2>/dev/null || echo "$chromium")"
else
  echo "chromium installed, but not at $chromium: set MSD_CHROMIUM to its path"
fi
exit 0
