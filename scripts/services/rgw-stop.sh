#!/usr/bin/env bash
# rgw-stop.sh - stop exactly the daemons recorded by rgw-start.sh in
# $DATA_DIR/pids/*.pid (rgw first, then mgr, osd, mon).  A PID is only
# signalled if /proc/<pid>/exe is still the expected ceph binary, so a
# recycled PID is never hit.  No pkill/killall.
# Usage: rgw-stop.sh [DATA_DIR] [--wipe]
set -uo pipefail
DIR="${1:-/tmp/rgw/data}"
WIPE="${2:-}"
[ -d "$DIR/pids" ] || { echo "no $DIR/pids, nothing to stop"; exit 0; }

expected_exe() {
  case "$1" in
    rgw.*) echo /usr/bin/radosgw ;;
    mgr.*) echo /usr/bin/ceph-mgr ;;
    osd.*) echo /usr/bin/ceph-osd ;;
    mon.*) echo /usr/bin/ceph-mon ;;
  esac
}

stop_one() { # name
  local name="$1" f="$DIR/pids/$1.pid" pid exe want
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  want="$(expected_exe "$name")"
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  if [ -z "$exe" ]; then echo "$name (pid $pid) not running"; rm -f "$f"; return 0; fi
  if [ "$exe" != "$want" ]; then
    echo "$name: pid $pid is $exe, not $want - not touching it"; rm -f "$f"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do            # up to 10 s
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$want" ] || break
    sleep 0.2
  done
  if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$want" ]; then
    echo "$name (pid $pid) ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null
  else
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

for f in "$DIR"/pids/rgw.*.pid "$DIR"/pids/mgr.*.pid "$DIR"/pids/osd.*.pid "$DIR"/pids/mon.*.pid; do
  [ -e "$f" ] || continue
  n="$(basename "$f" .pid)"
  stop_one "$n"
done
if [ "$WIPE" = --wipe ]; then rm -rf "${DIR:?}"; echo "removed $DIR"; fi
exit 0
