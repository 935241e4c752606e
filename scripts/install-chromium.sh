#!/usr/bin/env bash
# Install Debian's Chromium (/usr/bin/chromium) for the real-browser test of the local hub
# (tests/local/test_hub_browser.py drives it with Playwright for Python).
#
#   bash scripts/install-chromium.sh
#
# Why the distribution's package: Playwright's own browser download is not reachable from the
# machines that run our tests, Debian's packages are. The test launches it with
# executable_path=/usr/bin/chromium. Idempotent: a Chromium that runs is left alone (no
# apt-get at all then); otherwise `apt-get update` once and `apt-get install -y chromium` (with
# fonts-dejavu-core, so that pages have a font even on a minimal system).
# Needs root (CI and the development machines run as root) or sudo without a password
# (scripts/apt-install.sh).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

works() {
  [ -x "$CHROMIUM" ] && "$CHROMIUM" --headless --no-sandbox --version >/dev/null 2>&1
}

if works; then
  exit 0
fi

echo "==> installing Debian's chromium package (first run only; for the browser test)" >&2
bash "$(dirname "$0")/apt-install.sh" install-chromium --no-install-recommends \
  chromium fonts-dejavu-core

if ! works; then
  echo "install-chromium: $CHROMIUM does not run after apt-get install chromium" >&2
  exit 1
fi
