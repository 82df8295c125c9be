#!/usr/bin/env bash
# A single-node Ceph cluster (one mon, one OSD, no mgr) with radosgw (beast) on 127.0.0.1:
# the S3 server of `make run` and of the end-to-end tests. Plain daemonized processes, no
# systemd, auth none (loopback only, throw-away or local data).
#
#   scripts/rgw.sh start DIR   create the cluster in DIR (or start the one already there)
#   scripts/rgw.sh stop DIR    stop its daemons (DIR and its data stay)
#   scripts/rgw.sh user DIR ACCESS_KEY SECRET_KEY [UID]   create an S3 user (idempotent)
#
# Environment (start): RGW_PORT (7480), MON_PORT (3300; v1 messenger on MON_PORT+1),
# OSD_PORTS ("6800-6807": the OSD binds 4 to 8 ports in that range), OBJSTORE
# (memstore: in memory, gone at stop; bluestore: a sparse file in DIR, survives restarts),
# STORE_BYTES (memstore size / bluestore file size, default 8 GiB).
# Two clusters at once need other MON_PORT and OSD_PORTS (tests/stack.py picks free ones).
#
# Configuration facts (Ceph 16.2 Pacific, Debian 12), each one needed:
# - radosgw's built-in `ms_mon_client_mode=secure` cannot work with auth none (it loops on
#   "get_initial_auth_request returned -13"): `ms mon client mode = crc`.
# - `paxos propose interval` defaults to 1 s and radosgw's first start makes ~8 proposals
#   (pools and their application tags): 0.05 s brings S3-ready from ~13 s to ~2 s.
# - `bluestore block path` must stay unset (set to <osd data>/block, mkfs fails with ELOOP).
# - A daemon that exited stays a zombie until PID 1 reaps it: a zombie counts as stopped,
#   and daemons are stopped one at a time (rgw, osd, mon).
set -euo pipefail

cmd=${1:?usage: $0 start|stop|user DIR ...}
B=${2:?usage: $0 $cmd DIR}
mkdir -p "$B"
B=$(cd "$B" && pwd)
export CEPH_CONF=$B/ceph.conf
say() { printf '[rgw] %s\n' "$*" >&2; }

alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; }
pid_alive() { [ -f "$1" ] && alive "$(cat "$1")"; }
wait_for() { local t=$1; shift; for _ in $(seq 1 $((t * 10))); do "$@" && return 0; sleep 0.1; done; say "timeout: $*"; return 1; }

stop_one() {  # stop_one PIDFILE: SIGTERM, SIGKILL after 10 s
  local f=$1 p i
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if alive "$p"; then
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 1 100); do alive "$p" || break; sleep 0.1; done
    alive "$p" && kill -KILL "$p" 2>/dev/null
  fi
  rm -f "$f"
}

stop() {
  for d in client.rgw.a osd.0 mon.a; do stop_one "$B/run/$d.pid"; done
  if [ "$(cat "$B/objstore" 2>/dev/null)" = memstore ]; then
    # Memstore data is gone with the OSD: nothing to start again from.
    rm -rf "$B/mon" "$B/osd" "$B/ceph.conf" "$B/objstore" "$B/ports"
  fi
}

write_conf() {
  local fsid=$1 mon_port=$2 osd_min=$3 osd_max=$4 rgw_port=$5 objstore=$6 bytes=$7
  cat > "$CEPH_CONF" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port,v1:127.0.0.1:$((mon_port + 1))]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind port min = $osd_min
ms bind port max = $osd_max
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
ms mon client mode = crc
mon warn on insecure global id reclaim allowed = false
keyring = $B/keyring
run dir = $B/run
admin socket = $B/run/\$name.asok
log file = $B/log/\$name.log
pid file = $B/run/\$name.pid
crash dir = $B/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
[mon]
mon data = $B/mon/\$cluster-\$id
paxos propose interval = 0.05
[osd]
osd data = $B/osd/\$cluster-\$id
osd objectstore = $objstore
memstore device bytes = $bytes
bluestore block create = true
bluestore block size = $bytes
bluestore fsck on mount = false
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $B/rgw
rgw thread pool size = 64
# SSE-C over plain http: Envoy reaches radosgw over loopback (a production backend is
# reached over TLS); RGW refuses SSE-C requests that did not arrive over TLS otherwise.
rgw crypt require ssl = false
# SSE-KMS pass-through tests: RGW's built-in "testing" key store with one fixed key
# (a throw-away test cluster only; production RGW uses Vault, Barbican or KMIP).
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = s3crypt-test-kms=czNjcnlwdC10ZXN0LWttcy1rZXktMzItYnl0ZXMhISE=
CONF
}

osd_up() { ceph osd stat -f json 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["num_up_osds"]>=1 else 1)'; }
rgw_up() { curl -s -o /dev/null "http://127.0.0.1:$(cat "$B/ports" | cut -d' ' -f4)/"; }

start() {
  for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool; do
    command -v "$bin" >/dev/null || { say "$bin is missing: run scripts/setup.sh"; exit 1; }
  done
  mkdir -p "$B"/{run,log,crash,rgw}
  if pid_alive "$B/run/client.rgw.a.pid" && rgw_up; then
    say "already running in $B"; return 0
  fi
  stop  # whatever half of it may still run
  if [ ! -f "$B/ceph.conf" ]; then
    local mon_port=${MON_PORT:-3300} osd=${OSD_PORTS:-6800-6807} rgw_port=${RGW_PORT:-7480}
    local objstore=${OBJSTORE:-memstore} bytes=${STORE_BYTES:-8589934592}
    local fsid; fsid=$(cat /proc/sys/kernel/random/uuid)
    rm -rf "$B/mon" "$B/osd" "$B/keyring"
    mkdir -p "$B/mon/ceph-a" "$B/osd/ceph-0"
    write_conf "$fsid" "$mon_port" "${osd%-*}" "${osd#*-}" "$rgw_port" "$objstore" "$bytes"
    echo "$mon_port ${osd%-*} ${osd#*-} $rgw_port" > "$B/ports"
    echo "$objstore" > "$B/objstore"
    ceph-authtool --create-keyring "$B/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$B/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port,v1:127.0.0.1:$((mon_port + 1))]" "$B/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$B/monmap" --keyring "$B/keyring"
    ceph-mon -i a
    local uuid; uuid=$(cat /proc/sys/kernel/random/uuid)
    [ "$(ceph osd new "$uuid")" = 0 ]
    ceph-osd -i 0 --mkfs --osd-uuid "$uuid" 2>>"$B/log/osd-mkfs.log"
  else
    ceph-mon -i a
  fi
  ceph-osd -i 0
  wait_for 60 osd_up
  radosgw -n client.rgw.a
  wait_for 60 rgw_up
  say "S3 on http://127.0.0.1:$(cut -d' ' -f4 "$B/ports") ($(cat "$B/objstore"), $B)"
}

user() {
  local ak=${3:?access key} sk=${4:?secret key} uid=${5:-$3}
  if radosgw-admin user info --uid="$uid" >/dev/null 2>&1; then return 0; fi
  radosgw-admin user create --uid="$uid" --display-name="$uid" --access-key="$ak" --secret-key="$sk" >/dev/null
}

case $cmd in
  start) start ;;
  stop) stop ;;
  user) user "$@" ;;
  *) echo "usage: $0 start|stop|user DIR ..." >&2; exit 2 ;;
esac
