#!/usr/bin/env bash
# rgw-gateway.sh - stop or start only the radosgw of a cluster that
# rgw-start.sh made in DATA_DIR (the outage tests take S3 away and bring it
# back while the monitor and the OSD keep the data).
# Usage: rgw-gateway.sh stop|start DATA_DIR
set -euo pipefail
what="${1:?stop|start}"
DIR="${2:?data dir}"
RGW_ID=r
name="rgw.$RGW_ID"
pidfile="$DIR/pids/$name.pid"
export CEPH_CONF="$DIR/ceph.conf"
port="$(sed -n 's/.*beast endpoint=127.0.0.1:\([0-9]*\).*/\1/p' "$CEPH_CONF")"

case "$what" in
  stop)
    [ -f "$pidfile" ] || exit 0
    pid="$(cat "$pidfile")"
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/radosgw ] || exit 0
    kill -TERM "$pid"
    for _ in $(seq 1 50); do
      [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/radosgw ] || exit 0
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true ;;
  start)
    setsid radosgw -f -n "client.rgw.$RGW_ID" </dev/null >>"$DIR/log/$name.stdout" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 1 300); do
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null || true)
      [ "$code" = 200 ] && exit 0
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "radosgw exited" >&2; exit 1; }
      sleep 0.2
    done
    echo "radosgw not answering on 127.0.0.1:$port" >&2
    exit 1 ;;
  *) echo "usage: $0 stop|start DATA_DIR" >&2; exit 2 ;;
esac
