#!/usr/bin/env bash
# Debian's Chromium for the console's browser tests (Playwright drives it; no browser download).
set -euo pipefail
if ! command -v chromium >/dev/null; then
  echo "chromium.sh: installing Chromium from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
