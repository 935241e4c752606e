#!/usr/bin/env bash
# Install what builds and runs the one image on this machine (scripts/image.sh, ./dev image,
# tests/image): Debian's buildah, podman, runc (crun fails on cgroups in our CI containers) and
# debootstrap (the base where no registry is reachable).
#
#   bash scripts/install-podman.sh
#
# Idempotent: with all four present it does nothing; otherwise `apt-get update` once and
# `apt-get install -y` them. Needs root (CI and the development machines run as root; the image
# builds rootful), or sudo without a password (scripts/apt-install.sh).
set -euo pipefail

TOOLS=(buildah podman runc debootstrap)
missing=()
for tool in "${TOOLS[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "${#missing[@]}" = 0 ] && exit 0

echo "==> installing ${TOOLS[*]} (first run only; for the image and its test)" >&2
bash "$(dirname "$0")/apt-install.sh" install-podman "${TOOLS[@]}"
