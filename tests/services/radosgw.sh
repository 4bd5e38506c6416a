#!/usr/bin/env bash
# A real S3 server for the tests: single-node Ceph (mon + memstore OSD + radosgw) on loopback.
# It enforces SigV4, user and role policies, STS session policies, credential expiry and
# presigned URLs, which is what the isolation tests need to prove.
#
#   radosgw.sh start [PORT]   start (replacing an earlier instance on PORT); ~15 s
#   radosgw.sh stop [PORT]    stop it and remove its data
#
# Admin (service) credentials: RGWADMINKEY0000000001 / rgwadminsecret000000000000000000000000001
# Objects live in RAM (memstore, up to 6 GiB; deleted data is reclaimed within seconds). STS sessions may be as short as 5 s here so that the
# tests can watch credentials expire (rgw_sts_min_session_duration; Ceph's default is 900 s).
set -euo pipefail
ACTION=${1:-start}
PORT=${2:-7480}
D=/tmp/provider-radosgw-$PORT

stop() {
  # Every process of this instance: those in its pid files, and any whose working directory is
  # $D (a daemon shutting down removes its pid file before it has let go of its ports).
  local pids="" alive="" p cwd
  if [ -d "$D/run" ]; then
    for pidfile in "$D"/run/*.pid; do
      [ -f "$pidfile" ] && pids="$pids $(cat "$pidfile")"
    done
  fi
  for p in $(pgrep -x ceph-mon || true) $(pgrep -x ceph-osd || true) $(pgrep -x radosgw || true); do
    cwd=$(readlink "/proc/$p/cwd" 2>/dev/null || true)
    case "$cwd" in "$D" | "$D (deleted)") pids="$pids $p" ;; esac
  done
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    for _ in $(seq 1 50); do  # wait until they are gone, so that a new instance finds its ports free
      alive=""
      for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
      [ -z "$alive" ] && break
      sleep 0.2
    done
    if [ -n "$alive" ]; then
      # shellcheck disable=SC2086
      kill -9 $alive 2>/dev/null || true
    fi
  fi
  rm -rf "$D"
}

if [ "$ACTION" = stop ]; then stop; exit 0; fi

if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null \
   || ! command -v curl >/dev/null; then
  echo "radosgw.sh: installing Ceph (radosgw ceph-mon ceph-osd) and curl from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd curl >/dev/null
fi

stop
mkdir -p "$D"/{run,log,mon/ceph-a,osd/ceph-0}
cd "$D"
FSID=$(cat /proc/sys/kernel/random/uuid)
MON_PORT=$((PORT - 690))  # 6790 for 7480: keep clear of other clusters on 6789
cat > ceph.conf <<CONF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MON_PORT
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
ms bind ipv6 = false
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
pid file = $D/run/\$name.pid
mon data = $D/mon/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 6442450944
keyring = $D/keyring
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw sts key = abcdefghijklmnop
rgw s3 auth use sts = true
rgw sts min session duration = 5
# Reclaim deleted objects within seconds, not hours: memstore keeps everything in RAM.
rgw gc obj min wait = 1
rgw gc processor period = 2
rgw gc processor max time = 2
CONF
ceph-authtool --create-keyring keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --addv a "[v1:127.0.0.1:$MON_PORT]" --fsid "$FSID" monmap >/dev/null
ceph-mon -c ceph.conf --mkfs -i a --monmap monmap --keyring keyring
ceph-mon -c ceph.conf -i a
# A fresh monitor may refuse a client's first command ("wrong fsid" in mon.a.log, EPERM: the
# client asked before it had the cluster's map); the same command succeeds when tried again.
retry() {
  local attempt
  for attempt in 1 2 3 4 5; do
    "$@" && return 0
    sleep 1
  done
  echo "radosgw.sh: failed 5 times: $* (logs in $D/log)" >&2
  return 1
}
U=$(cat /proc/sys/kernel/random/uuid)
ID=$(retry timeout 300 ceph -c ceph.conf --connect-timeout 240 osd new "$U")  # generous: a loaded machine
retry ceph-osd -c ceph.conf -i "$ID" --mkfs --osd-uuid "$U" 2>/dev/null
retry ceph-osd -c ceph.conf -i "$ID" 2>/dev/null
radosgw -c ceph.conf -n client.rgw.a
for _ in $(seq 1 300); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 1; done
radosgw-admin -c ceph.conf user create --uid=admin --display-name=admin \
  --access-key=RGWADMINKEY0000000001 --secret=rgwadminsecret000000000000000000000000001 \
  --caps="roles=*;user-policy=*;users=*;buckets=*" >/dev/null 2>&1
curl -s -m 10 -o /dev/null "http://127.0.0.1:$PORT/" || { echo "radosgw.sh: radosgw does not answer" >&2; exit 1; }
echo "radosgw.sh: RGW ready on http://127.0.0.1:$PORT" >&2
