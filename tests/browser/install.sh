#!/usr/bin/env bash
# Headless Chromium from Debian's packages, for tests/test_report_browser.py (root only; the test
# skips with this reason elsewhere).  Idempotent: nothing to do when chromium is on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/browser/install.sh: chromium missing and not root with apt-get: the browser test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
