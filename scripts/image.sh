#!/usr/bin/env bash
# The one image (images/notebook/Dockerfile) on this machine, with buildah and podman (Debian
# packages: scripts/install-podman.sh), rootful, in a store of its own under .cache/image
# (git-ignored, so CI may keep it). The store uses overlay mounts where the kernel allows them,
# else vfs (NPD_IMAGE_DRIVER forces one): vfs copies the whole tree for every layer and container,
# many GB and minutes more.
#
#   scripts/image.sh tag          the tag the chart must carry: <package version>-<input hash>
#   scripts/image.sh build        build NAME:TAG (the base too, if missing); print size and digest
#   scripts/image.sh pin          build, push, pin the chart: NAME:TAG@DIGEST into values.yaml
#   scripts/image.sh podman ARGS  podman on the image's store (tests/image runs containers so)
#
# The input hash covers what decides the image's software: images/notebook/ (Dockerfile, build
# pins, context filter) and uv.lock. The package's own code is in the image too, and the digest,
# not the tag, pins it.
#
# The base, docker.io/library/debian:bookworm-slim: pulled where a registry is reachable; else
# (or with NPD_IMAGE_BASE=debootstrap) made by `debootstrap --variant=minbase bookworm`, slimmed
# like the official one, and imported under the same name, so the Dockerfile is the same here and
# anywhere. The debootstrap tarball is kept in .cache/image (NPD_IMAGE_BASE_MAX_DAYS, default 7).
set -euo pipefail
cd "$(dirname "$0")/.."

overlay_works() {
  local dir ok=1
  dir=$(mktemp -d /tmp/npd-overlay.XXXXXX)
  mkdir "$dir/lower" "$dir/upper" "$dir/work" "$dir/merged"
  if mount -t overlay overlay \
    -o "lowerdir=$dir/lower,upperdir=$dir/upper,workdir=$dir/work" "$dir/merged" 2>/dev/null; then
    umount "$dir/merged"
    ok=0
  fi
  rm -rf "$dir"
  return $ok
}

DRIVER=${NPD_IMAGE_DRIVER:-$(overlay_works && echo overlay || echo vfs)}
STORE=${NPD_IMAGE_STORE:-$PWD/.cache/image/storage-$DRIVER}
# podman's runtime state (locks, mounts) belongs to one store: one runroot per store
RUNROOT=/run/npd-image/$(printf %s "$STORE" | sha1sum | cut -c1-12)
STORAGE=(--storage-driver "$DRIVER" --root "$STORE" --runroot "$RUNROOT")
BASE=docker.io/library/debian:bookworm-slim
DOCKERFILE=images/notebook/Dockerfile
DEBIAN_MIRROR=${NPD_DEBIAN_MIRROR:-http://deb.debian.org/debian}

name() { # the chart's image name (values.yaml image.name): one home for it
  sed -n '/^image:/,/^[^ #]/s/^  name: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' \
    helm/neuropixels-hub/values.yaml | head -n1
}

input_hash() {
  { find images/notebook -type f -print0; printf 'uv.lock\0'; } | LC_ALL=C sort -z \
    | xargs -0 sha256sum | sha256sum | cut -c1-12
}

tag() {
  local version
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
  echo "$version-$(input_hash)"
}

pod() { podman "${STORAGE[@]}" "$@"; }

debootstrap_base() {
  local tarball=.cache/image/debian-bookworm-minbase.tar
  if [ -z "$(find "$tarball" -mtime -"${NPD_IMAGE_BASE_MAX_DAYS:-7}" 2>/dev/null)" ]; then
    echo "==> debootstrap --variant=minbase bookworm (the base, once a week)" >&2
    local root
    root=$(mktemp -d /tmp/npd-debootstrap.XXXXXX)
    debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >/dev/null
    # what the official -slim image does (debuerreotype): no docs, manuals, locales, apt lists
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
      "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
      "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/etc/machine-id
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    mkdir -p .cache/image
    tar --sort=name --numeric-owner -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$root"
  fi
  pod image rm -f "$BASE" >/dev/null 2>&1 || true
  pod import --quiet --change 'CMD ["bash"]' "$tarball" "$BASE" >/dev/null
}

base() {
  if pod image exists "$BASE"; then
    return
  fi
  if [ "${NPD_IMAGE_BASE:-pull}" != debootstrap ] &&
    timeout 60 podman "${STORAGE[@]}" pull --quiet "$BASE" >/dev/null 2>&1; then
    return
  fi
  debootstrap_base
}

digest() { pod image inspect --format '{{.Digest}}' "$1"; }

values_tag() { # the chart's image.tag now
  sed -n '/^image:/,/^[^ #]/s/^  tag: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' \
    helm/neuropixels-hub/values.yaml | head -n1
}

pin() {
  # Push, then pin the chart to the digest of what was pushed: the registry's (NPD_IMAGE_PUSH=1,
  # a release, where the registry is reachable and logged in), or else that of an OCI archive
  # in .cache/image, which `skopeo copy --preserve-digests oci-archive:FILE docker://NAME:TAG`
  # publishes under the same digest.
  build
  local ref dest digestfile old new
  ref="$(name):$(tag)"
  if [ -n "${NPD_IMAGE_PUSH:-}" ]; then
    dest="docker://$ref"
  else
    dest="oci-archive:$PWD/.cache/image/notebook-$(tag).oci.tar"
    rm -f .cache/image/notebook-*.oci.tar
  fi
  digestfile=$(mktemp)
  pod push --quiet --compression-format gzip --digestfile "$digestfile" "$ref" "$dest"
  new="$(tag)@$(cat "$digestfile")"
  rm -f "$digestfile"
  old=$(values_tag)
  # image.tag and jupyterhub.singleuser.image.tag (the pre-puller's), which carry the same value
  sed -i "s|^\( *tag: \)\"$old\"\( *\)\$|\1\"$new\"\2|" helm/neuropixels-hub/values.yaml
  echo "pushed $dest"
  echo "pinned helm/neuropixels-hub/values.yaml: $(name):$new"
}

build() {
  local ref start
  ref="$(name):$(tag)"
  base
  start=$(date +%s)
  local volumes=()
  if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then
    volumes=(--volume "$SSL_CERT_FILE:/run/build-ca.crt:ro")
  fi
  echo "==> building $ref ($DOCKERFILE)" >&2
  # --layers: an unchanged lock reuses the environment's layer; --pull=never: the base is in the
  # store (pulled or made above); chroot isolation: no user namespaces needed
  buildah "${STORAGE[@]}" bud --quiet --layers --pull=never --isolation chroot \
    --file "$DOCKERFILE" --ignorefile "$DOCKERFILE.dockerignore" "${volumes[@]}" \
    --label "org.opencontainers.image.version=$(tag)" \
    --tag "$ref" . >/dev/null
  local size
  size=$(pod image inspect --format '{{.Size}}' "$ref")
  echo "built $ref in $(($(date +%s) - start)) s"
  echo "size   $((size / 1000000)) MB (uncompressed)"
  echo "digest $(digest "$ref")"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  tag) tag ;;
  name) name ;;
  base) base ;;
  build) build ;;
  digest) digest "$(name):$(tag)" ;;
  pin) pin ;;
  podman) pod "$@" ;;
  *)
    sed -n '2,11p' "$0"
    exit 2
    ;;
esac
