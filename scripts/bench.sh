#!/usr/bin/env bash
# Builds the benchmarks (Release) and runs them; numbers go to docs/benchmarks.md.
#   scripts/bench.sh s3 [EXAMPLES_PER_WRITER] [ROUNDS]   end to end against Ceph RGW it starts on loopback
#   scripts/bench.sh spool [LATENCY_CALLS] [THROUGHPUT_CALLS]
#       generate() latency with RGW healthy and with S3 down; single-thread
#       throughput through the C++ API, the C ABI and ctypes
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-s3}"
shift || true
scripts/install-deps.sh test
cmake --preset bench >/dev/null
targets=("tdo_bench_$what")
[ "$what" = spool ] && targets+=(training_output_c)
cmake --build --preset bench -j "$(nproc)" --target "${targets[@]}"
case "$what" in
  s3)
    dir="$PWD/build/bench/rgw"
    SKIP_APT=1 scripts/services/rgw-start.sh "$dir" >/dev/null
    trap 'scripts/services/rgw-stop.sh "$dir" --wipe >/dev/null' EXIT
    TDO_BENCH_ENDPOINT=http://127.0.0.1:${RGW_PORT:-7480} build/bench/tests/bench/tdo_bench_s3 "$@" ;;
  spool)
    dir="$PWD/build/bench/rgw"
    SKIP_APT=1 scripts/services/rgw-start.sh "$dir" >/dev/null
    trap 'scripts/services/rgw-stop.sh "$dir" --wipe >/dev/null' EXIT
    TDO_BENCH_ENDPOINT=http://127.0.0.1:${RGW_PORT:-7480} build/bench/tests/bench/tdo_bench_spool "$@"
    TDO_LIBRARY="$(ls build/bench/libtraining_output_c.so* | head -n1)" python3 tests/bench/bench_ctypes.py "${2:-100000}" ;;
  *)
    "build/bench/tests/bench/tdo_bench_$what" "$@" ;;
esac
