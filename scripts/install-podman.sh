#!/usr/bin/env bash
# Install what builds and runs the one image on this machine (scripts/image.sh, ./dev image,
# tests/image): Debian's buildah, podman, runc (crun fails on cgroups in our CI containers) and
# debootstrap (the base where no registry is reachable).
#
#   bash scripts/install-podman.sh
#
# Idempotent: with all four present it does nothing; otherwise `apt-get update` once and
# `apt-get install -y` them. Needs root (CI and the development machines run as root; the image
# builds rootful), or sudo without a password.
set -euo pipefail

TOOLS=(buildah podman runc debootstrap)
missing=()
for tool in "${TOOLS[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "${#missing[@]}" = 0 ] && exit 0

as_root=()
[ "$(id -u)" = 0 ] || as_root=(sudo -n)
if ! command -v apt-get >/dev/null 2>&1 || ! "${as_root[@]}" true 2>/dev/null; then
  echo "install-podman: ${missing[*]} missing; install the Debian packages ${TOOLS[*]} as" \
       "root (apt-get install -y ${TOOLS[*]})" >&2
  exit 1
fi
echo "==> installing ${TOOLS[*]} (first run only; for the image and its test)" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2
"${as_root[@]}" apt-get install -y -qq "${TOOLS[@]}" >&2
