#!/usr/bin/env bash
# s3rver (npm, pinned in tests/node/package-lock.json) on loopback, for tests.
#   s3rver.sh start DATA_DIR PORT   starts it, waits until it answers
#   s3rver.sh stop DATA_DIR         stops the one started with DATA_DIR
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cmd="${1:?start|stop}"
dir="${2:?DATA_DIR}"
case "$cmd" in
  start)
    port="${3:?PORT}"
    bin="$ROOT/tests/node/node_modules/s3rver/bin/s3rver.js"
    [ -f "$bin" ] || { echo "s3rver is not installed: run npm ci --prefix tests/node" >&2; exit 1; }
    "$0" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir" && mkdir -p "$dir/data"
    (exec setsid node "$bin" --address 127.0.0.1 --port "$port" --directory "$dir/data" --silent \
       </dev/null >"$dir/s3rver.log" 2>&1) &
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
    if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = node ]; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid" ;;
  *) echo "usage: s3rver.sh start DATA_DIR PORT | stop DATA_DIR" >&2; exit 2 ;;
esac
