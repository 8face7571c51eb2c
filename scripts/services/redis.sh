#!/usr/bin/env bash
# redis-server on loopback, for tests and benchmarks: no persistence, a password
# for the default user, a restricted ACL user, and a unix socket.
#   redis.sh start DIR PORT   starts it (config, pidfile, log and socket in DIR), waits until it answers
#   redis.sh stop DIR         stops the one started with DIR
# Environment: REDIS_PASSWORD (default user), REDIS_ACL_USER / REDIS_ACL_PASSWORD
# (a user allowed only what the dedup store needs, on keys tdo-acl*).
set -euo pipefail
cmd="${1:?start|stop}"
dir="${2:?DIR}"
password="${REDIS_PASSWORD:-tdo-test-secret}"
acl_user="${REDIS_ACL_USER:-tdo-writer}"
acl_password="${REDIS_ACL_PASSWORD:-tdo-acl-secret}"
# Running, and not a zombie waiting for its (daemonized) parent to reap it.
alive() { local state; state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)"; [ -n "$state" ] && [ "$state" != Z ]; }
case "$cmd" in
  start)
    port="${3:?PORT}"
    command -v redis-server >/dev/null || { echo "redis-server is not installed: scripts/install-deps.sh test" >&2; exit 1; }
    "$0" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir" && mkdir -p "$dir"
    umask 077
    cat >"$dir/redis.conf" <<CONF
bind 127.0.0.1
port $port
unixsocket $dir/redis.sock
unixsocketperm 700
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
requirepass $password
user $acl_user on >$acl_password ~tdo-acl* -@all +ping +select +set +get +del +exists +eval
CONF
    redis-server "$dir/redis.conf" || { cat "$dir/redis.log" >&2 2>/dev/null; echo "redis-server did not start" >&2; exit 1; }
    for _ in $(seq 1 100); do
      if [ "$(REDISCLI_AUTH="$password" redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
        echo "redis on redis://127.0.0.1:$port"; exit 0
      fi
      sleep 0.1
    done
    cat "$dir/redis.log" >&2 2>/dev/null || true
    echo "redis-server did not answer on port $port" >&2; exit 1 ;;
  stop)
    [ -f "$dir/redis.pid" ] || exit 0
    pid="$(cat "$dir/redis.pid")"
    if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = redis-server ]; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/redis.pid" ;;
  *) echo "usage: redis.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
