#!/usr/bin/env bash
# A stand-in for the Dockerfiles' base image (python:3.11-slim), made here from Debian packages,
# since no container registry is reachable: Debian bookworm's Python 3.11 with venv, the user
# tools, `python` on the PATH, and this machine's CA certificates (its egress to PyPI goes
# through them). tests/test_images.py builds both Dockerfiles on it with buildah, running
# every RUN step for real. Installs buildah and debootstrap from Debian packages when missing.
set -euo pipefail
image="${1:-localhost/python-base:3.11}"
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "image-base.sh: installing buildah and debootstrap from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends buildah debootstrap >/dev/null
fi
if buildah inspect --type image "$image" >/dev/null 2>&1; then
  exit 0
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
  bookworm "$root" "${mirror:-http://deb.debian.org/debian}" >/dev/null
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
container="$(buildah from scratch)"
mount="$(buildah mount "$container")"
cp -a "$root/." "$mount/"
buildah config --env PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$container"
buildah commit -q "$container" "$image" >/dev/null
buildah rm "$container" >/dev/null
