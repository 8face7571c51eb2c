#!/usr/bin/env bash
# The test command: installs what the tests need, builds, runs every test.
#   scripts/test.sh           every test, in every configuration of TDO_TEST_CONFIGS
#   scripts/test.sh quick     the everyday loop: the tests labelled quick (no server, about a
#                             minute on 2 cores), in the ci configuration only
#   TDO_TEST_CONFIGS  which presets to build and test (default: "ci asan tsan"; tsan runs the
#                     tests of threads, spools, writers and dedup stores under ThreadSanitizer)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
if [ "${1:-}" = quick ]; then
  # The npm packages are installed once; the full run reinstalls them exactly as locked.
  [ -d tests/node/node_modules ] || npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
  cmake --preset ci >/dev/null
  cmake --build --preset ci -j "$(nproc)"
  ctest --preset ci -L '^quick$' -j "$(nproc)"
  exit 0
fi
# Test-only npm packages, exactly as locked.
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

configs="${TDO_TEST_CONFIGS:-ci asan tsan}"
jobs="$(nproc)"
for preset in $configs; do
  if [ "$preset" = tsan ]; then
    echo "== configure, build and test: tsan (the concurrency tests)"
    cmake --preset tsan >/dev/null
    cmake --build --preset tsan -j "$jobs" --target tdo_unit_tests tdo_test_crash_writer tdo_test_writer_process
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
      build/tsan/tests/tdo_unit_tests "[concurrency],[threads],[spool],[writer],[dedup]" >build/tsan/tests.log 2>&1 ||
      { tail -n 200 build/tsan/tests.log; echo "== tsan: failed (build/tsan/tests.log)"; exit 1; }
    tail -n 3 build/tsan/tests.log
    continue
  fi
  echo "== configure, build and test: $preset"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  ctest --preset "$preset" -j "$jobs"
done
echo "== all tests passed ($configs)"
