#!/usr/bin/env bash
# Snakemake with its TES executor and S3 storage plugins, in a virtual environment of its own
# (.venv-snakemake): the workflow engine of tests/test_tes_snakemake.py, and the software its
# tasks run (the local backend's stand-in for the snakemake/snakemake image). Pinned by
# tests/services/snakemake.lock; the TES plugin needs py-tes 0.4, the service's tests 1.1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SNAKEMAKE_VENV:-$here/../../.venv-snakemake}"
stamp="$venv/.installed"
if [[ -f "$stamp" && "$stamp" -nt "$here/snakemake.lock" ]]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade "pip>=24"
"$venv/bin/pip" install --quiet -r "$here/snakemake.lock"
touch "$stamp"
