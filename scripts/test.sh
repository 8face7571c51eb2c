#!/usr/bin/env bash
# The test command: installs what the tests need, builds, runs every test.
#   TDO_TEST_CONFIGS  which presets to build and test (default: "ci asan")
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
# Test-only npm packages, exactly as locked.
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

configs="${TDO_TEST_CONFIGS:-ci asan}"
jobs="$(nproc)"
for preset in $configs; do
  echo "== configure, build and test: $preset"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  ctest --preset "$preset" -j "$jobs"
done
echo "== all tests passed ($configs)"
