#!/usr/bin/env bash
# rgw-start.sh - throwaway single-node Ceph (1 mon + 1 memstore OSD, no cephx)
# plus radosgw (beast) on 127.0.0.1:7480, with an S3 user testkey/testsecret.
#
# Usage: rgw-start.sh [DATA_DIR]        (default /tmp/rgw/data)
# Env:   RGW_PORT (7480)  S3_ACCESS_KEY (testkey)  S3_SECRET_KEY (testsecret)
#        MEMSTORE_BYTES (4294967296)  SKIP_APT=1 (do not touch apt at all)
#        WITH_MGR=1 (also start a ceph-mgr; not needed for S3)
#
# Every daemon is started in the foreground (-f) in the background of this
# script; its PID is written to $DATA_DIR/pids/<name>.pid so that
# rgw-stop.sh can stop exactly those processes.  Re-running wipes DATA_DIR
# (after stopping the daemons recorded there).
set -euo pipefail

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fmt() { printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )); }
T0=$(now_ms)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${1:-/tmp/rgw/data}"
RGW_PORT="${RGW_PORT:-7480}"
S3_ACCESS_KEY="${S3_ACCESS_KEY:-testkey}"
S3_SECRET_KEY="${S3_SECRET_KEY:-testsecret}"
MEMSTORE_BYTES="${MEMSTORE_BYTES:-4294967296}"
MON_NAME=a
OSD_ID=0
RGW_ID=r
MGR_NAME=x

log() { echo "[$(fmt $(( $(now_ms) - T0 )))s] $*"; }
die() { log "ERROR: $*"; for f in "$DIR"/log/*.log; do [ -f "$f" ] && { echo "--- tail $f"; tail -n 20 "$f"; }; done; exit 1; }

# ---------------------------------------------------------------- packages
need_pkgs=()
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v ceph-mon     >/dev/null 2>&1 || need_pkgs+=(ceph-mon)
command -v ceph-osd     >/dev/null 2>&1 || need_pkgs+=(ceph-osd)
command -v radosgw      >/dev/null 2>&1 || need_pkgs+=(radosgw)
command -v ceph         >/dev/null 2>&1 || need_pkgs+=(ceph-common)
command -v monmaptool   >/dev/null 2>&1 || need_pkgs+=(ceph-base)
command -v uuidgen      >/dev/null 2>&1 || need_pkgs+=(uuid-runtime)
if [ "${WITH_MGR:-0}" = 1 ]; then command -v ceph-mgr >/dev/null 2>&1 || need_pkgs+=(ceph-mgr); fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  [ "${SKIP_APT:-0}" = 1 ] && { echo "missing packages: ${need_pkgs[*]}" >&2; exit 1; }
  echo "installing: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Note: on a systemd host the package postinst may enable (not start)
  # ceph-*.target units; nothing is started for an unconfigured cluster.
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
T_APT=$(now_ms)
log "packages ready"

# ---------------------------------------------------------------- wipe
if [ -d "$DIR/pids" ]; then
  log "stopping daemons from a previous run in $DIR"
  "$HERE/rgw-stop.sh" "$DIR" || true
fi
for p in 3300 6789 "$RGW_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port 127.0.0.1:$p already in use (another cluster/radosgw running from a different data dir?)"
  fi
done
rm -rf "${DIR:?}"
mkdir -p "$DIR"/{log,run,mon,osd,pids}

export CEPH_CONF="$DIR/ceph.conf"
FSID="$(uuidgen)"
cat > "$CEPH_CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
osd heartbeat addr = 127.0.0.1
ms bind ipv6 = false
run dir = $DIR/run
admin socket = $DIR/run/\$cluster-\$name.asok
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = true
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon max pg per osd = 1000
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail crit = 0
mon data avail warn = 0
mon warn on insecure global id reclaim allowed = false

[mon]
mon data = $DIR/mon
mon cluster log file = $DIR/log/mon-cluster.log
mon allow pool delete = true
# test cluster: propose paxos updates immediately instead of batching for 1 s
# (each pool create/app enable by radosgw otherwise costs ~1 s)
paxos propose interval = 0.01
paxos min wait = 0.001

[osd]
osd data = $DIR/osd
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd class load list = *
osd class default list = *
osd crush update on start = false

[mgr]
mgr data = $DIR/mgr

[client.rgw.$RGW_ID]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw data = $DIR/rgw
# Every append rewrites or copies its object; collect the old copies within
# seconds (the default waits 2 h), so that the in-memory OSD does not fill up.
rgw gc obj min wait = 5
rgw gc processor period = 5
rgw gc processor max time = 5
EOF

start_daemon() { # name binary args...
  local name="$1"; shift
  # setsid: own session, so a Ctrl-C in the caller's terminal does not hit it
  setsid "$@" </dev/null >>"$DIR/log/$name.stdout" 2>&1 &
  echo $! > "$DIR/pids/$name.pid"
  log "started $name (pid $!): $*"
}

alive() { kill -0 "$(cat "$DIR/pids/$1.pid")" 2>/dev/null; }

# ---------------------------------------------------------------- mon
monmaptool --create --fsid "$FSID" --addv "$MON_NAME" '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' \
  "$DIR/monmap" >/dev/null
ceph-mon --id "$MON_NAME" --mkfs --monmap "$DIR/monmap" --keyring /dev/null
start_daemon mon.$MON_NAME ceph-mon -f --id "$MON_NAME"
for i in $(seq 1 100); do
  timeout 10 ceph --connect-timeout 5 mon stat >/dev/null 2>&1 && break
  alive mon.$MON_NAME || die "ceph-mon exited"
  sleep 0.2
done
timeout 10 ceph --connect-timeout 5 mon stat >/dev/null 2>&1 || die "mon not reachable"
log "mon up"

# ---------------------------------------------------------------- osd
OSD_UUID="$(uuidgen)"
id=$(ceph osd new "$OSD_UUID")
[ "$id" = "$OSD_ID" ] || die "expected osd id $OSD_ID, got $id"
ceph osd crush add "osd.$OSD_ID" 1 root=default >/dev/null 2>&1
ceph-osd --id "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >>"$DIR/log/osd.mkfs.log" 2>&1 \
  || die "ceph-osd --mkfs failed"
start_daemon osd.$OSD_ID ceph-osd -f --id "$OSD_ID"
for i in $(seq 1 150); do
  ceph osd dump 2>/dev/null | grep -q "^osd.$OSD_ID up" && break
  alive osd.$OSD_ID || die "ceph-osd exited"
  sleep 0.2
done
ceph osd dump | grep -q "^osd.$OSD_ID up" || die "osd not up"
log "osd up"

if [ "${WITH_MGR:-0}" = 1 ]; then
  mkdir -p "$DIR/mgr"
  start_daemon mgr.$MGR_NAME ceph-mgr -f --id "$MGR_NAME"
fi

# ---------------------------------------------------------------- rgw
mkdir -p "$DIR/rgw"
start_daemon rgw.$RGW_ID radosgw -f -n "client.rgw.$RGW_ID"
for i in $(seq 1 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RGW_PORT/" 2>/dev/null || true)
  [ "$code" = 200 ] && break
  alive rgw.$RGW_ID || die "radosgw exited"
  sleep 0.2
done
[ "$code" = 200 ] || die "radosgw not answering on 127.0.0.1:$RGW_PORT (last code $code)"
log "radosgw answering on http://127.0.0.1:$RGW_PORT"

# ---------------------------------------------------------------- S3 user
radosgw-admin user create --uid=test --display-name="Test User" \
  --access-key="$S3_ACCESS_KEY" --secret-key="$S3_SECRET_KEY" >"$DIR/log/user-create.json" 2>>"$DIR/log/radosgw-admin.log" \
  || die "radosgw-admin user create failed"
log "S3 user test created (access key $S3_ACCESS_KEY)"

T1=$(now_ms)
echo "SETUP DONE: total $(fmt $((T1 - T0)))s (apt/check $(fmt $((T_APT - T0)))s, cluster+rgw $(fmt $((T1 - T_APT)))s)"
echo "endpoint: http://127.0.0.1:$RGW_PORT  AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY"
echo "CEPH_CONF=$CEPH_CONF  stop with: $HERE/rgw-stop.sh $DIR"
