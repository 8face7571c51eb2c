#!/usr/bin/env bash
# Builds the benchmarks (Release) and runs them; numbers go to docs/benchmarks.md.
#   scripts/bench.sh default [DIR]                        the default configuration ({"output_dir": DIR}: SQLite
#                                                        dedup file, local directory, redaction on) on the disk DIR
#                                                        is on (default /var/tmp/tdo-bench): one thread, 4 threads,
#                                                        4 processes, a quiet service, duplicates, a re-run, idle
#                                                        writers; then the memory store and Redis beside it, and
#                                                        the original module's Python formatter in the same run
#   scripts/bench.sh prefilled [DIR] [PREFILL]           throughput into a dedup store holding PREFILL examples
#                                                        (1,000,000) against an empty one
#   scripts/bench.sh store-pattern [DIR] [PREFILL] [KEYS] [GROUP]
#                                                        the dedup store's access pattern (a lookup, a claim, a
#                                                        commit a key) in SQLite and in LMDB, empty and holding
#                                                        PREFILL keys (an evaluation, not the library's store;
#                                                        TDO_BENCH_SQLITE_ONLY=1: the SQLite variants only)
#   scripts/bench.sh s3 [EXAMPLES_PER_WRITER] [ROUNDS]   end to end against Ceph RGW it starts on loopback
#   scripts/bench.sh fleet [WRITERS] [SECONDS] [RATE] [MODE]
#                                                        WRITERS writers in one process, each RATE examples/s
#                                                        into one key for SECONDS, against Ceph RGW
#                                                        (TDO_BENCH_SERVER=s3rver: against s3rver, one compactor)
#   scripts/bench.sh compaction [BATCH_OBJECTS] [SPOOLS] a compaction of a month of batch objects while a
#                                                        reader reads it, against Ceph RGW
#   scripts/bench.sh appendable [APPENDS]                what RGW's appendable objects take: APPENDS native
#                                                        appends to one key, then copies, reads and PUTs of it
#   scripts/bench.sh spool [LATENCY_CALLS] [THROUGHPUT_CALLS]
#       generate() latency with RGW healthy and with S3 down; single-thread
#       throughput through the C++ API, the C ABI and ctypes
#   scripts/bench.sh redact [ROUNDS] [RUNS]              redact_phi() over the benchmark narrative, the PHI
#                                                        corpora and a 2 KB and a 64 KB narrative, each
#                                                        also without the first pass (no server)
#   scripts/bench.sh redis [CLAIMS] [THREADS]            the Redis dedup store against a redis-server it
#                                                        starts on loopback, then redis-benchmark's SET
#                                                        on the same server as the ceiling
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-s3}"
shift || true
scripts/install-deps.sh bench
cmake --preset bench >/dev/null
targets=("tdo_bench_$what")
[ "$what" = appendable ] && targets=(tdo_bench_rgw_appendable)
[ "$what" = spool ] && targets+=(training_output_c)
[ "$what" = prefilled ] && targets=(tdo_bench_default)
[ "$what" = store-pattern ] && targets=(tdo_bench_store_pattern)
cmake --build --preset bench -j "$(nproc)" --target "${targets[@]}"
case "$what" in
  s3)
    dir="$PWD/build/bench/rgw"
    SKIP_APT=1 scripts/services/rgw-start.sh "$dir" >/dev/null
    trap 'scripts/services/rgw-stop.sh "$dir" --wipe >/dev/null' EXIT
    TDO_BENCH_ENDPOINT=http://127.0.0.1:${RGW_PORT:-7480} build/bench/tests/bench/tdo_bench_s3 "$@" ;;
  fleet)
    if [ "${TDO_BENCH_SERVER:-rgw}" = s3rver ]; then
      dir="$PWD/build/bench/s3rver"
      port="${S3RVER_PORT:-4569}"
      scripts/services/s3rver.sh start "$dir" "$port" >/dev/null
      trap 'scripts/services/s3rver.sh stop "$dir" >/dev/null' EXIT
      TDO_BENCH_ONE_COMPACTOR=1 TDO_BENCH_ENDPOINT="http://127.0.0.1:$port" TDO_BENCH_ACCESS_KEY=S3RVER \
        TDO_BENCH_SECRET_KEY=S3RVER build/bench/tests/bench/tdo_bench_fleet "$@"
    else
      dir="$PWD/build/bench/rgw"
      MEMSTORE_BYTES=$((6 << 30)) SKIP_APT=1 scripts/services/rgw-start.sh "$dir" >/dev/null
      trap 'scripts/services/rgw-stop.sh "$dir" --wipe >/dev/null' EXIT
      TDO_BENCH_ENDPOINT=http://127.0.0.1:${RGW_PORT:-7480} build/bench/tests/bench/tdo_bench_fleet "$@"
    fi ;;
  append|compaction|appendable)
    dir="$PWD/build/bench/rgw"
    # Room for a 1 GiB object, its copy, and the copies RGW has not collected yet.
    MEMSTORE_BYTES=$((6 << 30)) SKIP_APT=1 scripts/services/rgw-start.sh "$dir" >/dev/null
    trap 'scripts/services/rgw-stop.sh "$dir" --wipe >/dev/null' EXIT
    TDO_BENCH_ENDPOINT=http://127.0.0.1:${RGW_PORT:-7480} "build/bench/tests/bench/${targets[0]}" "$@" ;;
  spool)
    dir="$PWD/build/bench/rgw"
    SKIP_APT=1 scripts/services/rgw-start.sh "$dir" >/dev/null
    trap 'scripts/services/rgw-stop.sh "$dir" --wipe >/dev/null' EXIT
    TDO_BENCH_ENDPOINT=http://127.0.0.1:${RGW_PORT:-7480} build/bench/tests/bench/tdo_bench_spool "$@"
    TDO_LIBRARY="$(ls build/bench/libtraining_output_c.so* | head -n1)" python3 tests/bench/bench_ctypes.py "${2:-100000}" ;;
  default)
    dir="${1:-/var/tmp/tdo-bench}"
    mkdir -p "$dir"
    b=build/bench/tests/bench/tdo_bench_default
    echo "== the default configuration, on the disk of $dir ($(df --output=source,fstype "$dir" | tail -1 | tr -s ' '))"
    python3 tests/bench/python_formatter.py 50000 3
    $b "$dir" throughput 50000 3
    $b "$dir" threads 4 200000
    $b "$dir" processes 4 200000
    $b "$dir" quiet 100
    $b "$dir" duplicates 50000
    $b "$dir" rerun 200000
    $b "$dir" idle 100
    echo "== not the default: the memory dedup store; redaction off; the Redis store (local redis-server)"
    $b "$dir" throughput 50000 3 ',"dedup_store":"memory"'
    $b "$dir" throughput 50000 3 ',"dedup_store":"memory","redact_phi":false'
    port="${REDIS_PORT:-6391}"
    export REDIS_PASSWORD="${REDIS_PASSWORD:-tdo-bench-secret}"
    scripts/services/redis.sh start "$dir/redis" "$port" >/dev/null
    trap 'scripts/services/redis.sh stop "$dir/redis" >/dev/null' EXIT
    $b "$dir" throughput 50000 3 ",\"redis_url\":\"redis://:$REDIS_PASSWORD@127.0.0.1:$port/0\""
    python3 tests/bench/python_formatter.py 50000 3 ;;
  prefilled)
    dir="${1:-/var/tmp/tdo-bench}"
    mkdir -p "$dir"
    build/bench/tests/bench/tdo_bench_default "$dir" prefilled "${2:-1000000}" 50000 ;;
  redact)
    build/bench/tests/bench/tdo_bench_redact "$@" ;;
  store-pattern)
    dir="${1:-/var/tmp/tdo-bench}"
    mkdir -p "$dir"
    build/bench/tests/bench/tdo_bench_store_pattern "$dir" "${2:-1000000}" "${3:-50000}" "${4:-256}" ;;
  redis)
    dir="$PWD/build/bench/redis"
    port="${REDIS_PORT:-6391}"
    export REDIS_PASSWORD="${REDIS_PASSWORD:-tdo-bench-secret}"
    scripts/services/redis.sh start "$dir" "$port" >/dev/null
    trap 'scripts/services/redis.sh stop "$dir" >/dev/null' EXIT
    TDO_BENCH_REDIS_URL="redis://:$REDIS_PASSWORD@127.0.0.1:$port/0" build/bench/tests/bench/tdo_bench_redis "$@"
    claims="${1:-100000}"
    # The same command as a claim, on keys of the same length (83 bytes), from redis-benchmark's
    # event loop: what the server and the loopback allow.
    key="bench-$(printf 'f%.0s' $(seq 1 64)):__rand_int__"
    echo "redis-benchmark, SET <83-byte key> <token> NX EX 86400 on the same server (the ceiling):"
    for args in "-c 1" "-c 1 -P 10" "-c 1 -P 100" "-c 1 -P 1000" "-c ${2:-4}"; do
      printf '  %-14s ' "$args"
      # shellcheck disable=SC2086
      redis-benchmark -h 127.0.0.1 -p "$port" -a "$REDIS_PASSWORD" -r 1000000000 -n "$claims" $args -q \
          SET "$key" 0123456789abcdef0123456789abcdef NX EX 86400 2>/dev/null \
        | tr '\r' '\n' | grep -E 'requests per second' | tail -1 | sed 's/^.*: \([0-9.]* requests\)/\1/'
    done ;;
  *)
    "build/bench/tests/bench/tdo_bench_$what" "$@" ;;
esac
