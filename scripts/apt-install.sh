#!/usr/bin/env bash
# `apt-get install` for the installers in scripts/ (Chromium, podman): as root, or with sudo
# without a password; where neither (or no apt-get) is there, a message that says what to do.
#
#   bash scripts/apt-install.sh WHO [APT-OPTIONS] PACKAGE...
#
# WHO names the calling installer in messages. `apt-get update` runs first, once per call: the
# callers run this only when something is missing.
set -euo pipefail

who=$1
shift
as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "$who: installing needs root: run \`sudo apt-get install -y $*\` once" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$who: there is no apt-get here: install the equivalent of Debian's $*" \
       "with the system's package manager" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2
"${as_root[@]}" apt-get install -y -qq "$@" >&2
