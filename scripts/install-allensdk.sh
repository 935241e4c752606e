#!/usr/bin/env bash
# A separate virtual environment with AllenSDK 2.16.2, the reference our session API must equal.
# AllenSDK pins numpy 1.23 / pandas 1.5, which cannot live next to the project's own stack, so it
# gets its own venv (DEST, default .tools/allensdk), installed from the lock
# scripts/allensdk-requirements.txt (hdmf 3.14 is the release pynwb 2.8, AllenSDK's, was built
# against; newer hdmf breaks it). With uv (./dev installs it) this takes seconds; pip is the
# fallback. Idempotent.
set -euo pipefail
DEST=${1:-.tools/allensdk}
PYTHON=${PYTHON:-python3}
LOCK="$(dirname "$0")/allensdk-requirements.txt"
UV=${UV:-.tools/uv/bin/uv}
if [ -x "$DEST/bin/python" ] && "$DEST/bin/python" -c "import allensdk, pynwb" 2>/dev/null; then
  exit 0
fi
echo "==> installing AllenSDK 2.16.2 into $DEST (reference environment, first run only)"
if [ -x "$UV" ]; then
  "$UV" venv --quiet --python "$PYTHON" "$DEST"
  "$UV" pip install --quiet --python "$DEST/bin/python" -r "$LOCK"
else
  "$PYTHON" -m venv "$DEST"
  "$DEST/bin/python" -m pip install -q --upgrade pip
  "$DEST/bin/python" -m pip install -q -r "$LOCK"
fi
# pynwb caches its type map pickled by whichever hdmf was installed first: rebuild it
find "$DEST" -path "*site-packages/pynwb/*.pkl" -delete
"$DEST/bin/python" -c "import allensdk, pynwb; print('AllenSDK', allensdk.__version__, 'pynwb', pynwb.__version__)"
