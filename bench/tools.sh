#!/usr/bin/env bash
# The benchmarks' own tools, from Debian's packages: wrk (HTTP load that is not the bottleneck)
# and taskset (util-linux: pin the server and the load generator to different cores).
set -euo pipefail
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
