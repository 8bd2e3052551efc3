#!/usr/bin/env bash
# Install Debian's chromium for the browser test of the Prefect UI (tests/test_ui.py), if it is missing.
# Needs root and Debian's package registry; Playwright drives this browser (`playwright install` is never used).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing; run as root: apt-get update && apt-get install -y --no-install-recommends chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium
