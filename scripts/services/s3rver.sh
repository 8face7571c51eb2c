#!/usr/bin/env bash
# s3rver (npm, pinned in tests/node/package-lock.json) on loopback, for tests.
#   s3rver.sh start DATA_DIR PORT   starts it, waits until it answers
#   s3rver.sh stop DATA_DIR         stops the one started with DATA_DIR
# It runs through tests/node/s3rver-serve.cjs, which logs an error escaping a
# request instead of exiting, under a loop that restarts it (same data) should
# it exit anyway; both are in DATA_DIR/s3rver.log, which `stop` summarizes.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cmd="${1:?start|stop}"
dir="${2:?DATA_DIR}"
case "$cmd" in
  start)
    port="${3:?PORT}"
    serve="$ROOT/tests/node/s3rver-serve.cjs"
    [ -d "$ROOT/tests/node/node_modules/s3rver" ] || { echo "s3rver is not installed: run npm ci --prefix tests/node" >&2; exit 1; }
    "$0" stop "$dir" >/dev/null 2>&1 || true
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port 127.0.0.1:$port is in use already (another s3rver?)" >&2; exit 1
    fi
    rm -rf "$dir" && mkdir -p "$dir/data"
    # A session of its own: `stop` ends the loop and the server together.
    (exec setsid bash -c '
       while :; do
         node "$0" 127.0.0.1 "$1" "$2"
         status=$?
         echo "$(date -u +%FT%TZ) s3rver exited with status $status; restarting it on the same data"
         sleep 0.2
       done' "$serve" "$port" "$dir/data" </dev/null >"$dir/s3rver.log" 2>&1) &
    echo $! >"$dir/pid"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "s3rver on http://127.0.0.1:$port"; exit 0; fi
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || { cat "$dir/s3rver.log" >&2; echo "s3rver exited" >&2; exit 1; }
      sleep 0.1
    done
    echo "s3rver did not start on port $port" >&2; exit 1 ;;
  stop)
    [ -f "$dir/pid" ] || exit 0
    pid="$(cat "$dir/pid")"
    # The loop leads its own process group (setsid): end the group.
    if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = bash ]; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
    if grep -q -E "uncaught|unhandled|exited with status" "$dir/s3rver.log" 2>/dev/null; then
      echo "s3rver logged errors while the tests ran ($dir/s3rver.log):" >&2
      grep -E "uncaught|unhandled|exited with status" "$dir/s3rver.log" | head -n 20 >&2
    fi ;;
  *) echo "usage: s3rver.sh start DATA_DIR PORT | stop DATA_DIR" >&2; exit 2 ;;
esac
