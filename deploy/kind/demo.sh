#!/usr/bin/env bash
# The quick start's demo, against a running service: URL and admin key as arguments. A tenant
# and its key, a 1 MiB file run through the dummy asset in a new workspace, its output
# downloaded and compared byte for byte. Uses the repository's own command line (.venv).
set -euo pipefail
url="$1" admin_key="$2"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cli="$repo/.venv/bin/provider"
field() { "$repo/.venv/bin/python" -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
export PROVIDER_API_URL="$url"

tenant="$(PROVIDER_API_KEY="$admin_key" "$cli" tenants create "did:web:demo-$RANDOM.example" --json | field id)"
key="$(PROVIDER_API_KEY="$admin_key" "$cli" keys create "$tenant" --json | field key)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
head -c 1048576 /dev/urandom > "$work/input.bin"
PROVIDER_API_KEY="$key" "$cli" run dummy --input "source=$work/input.bin" --param SLEEP_SECONDS=1 \
  --download "$work/outputs"
cmp "$work/input.bin" "$work/outputs/output"
echo "demo: the execution's output is its input, byte for byte" >&2
