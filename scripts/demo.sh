#!/usr/bin/env bash
# Builds the command-line program and runs it on the shipped sample on the
# embedded default (a local directory + SQLite; nothing to start), then shows
# the resulting tree and one line. Run it twice: the second run writes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DTDO_BUILD_TESTS=OFF >/dev/null
cmake --build build/release --target training-output-cli -j "$(nproc)"
out="${1:-./training-data}"
echo
echo "== training-output-cli --output-dir $out examples/cli/sample.jsonl"
build/release/examples/training-output-cli --output-dir "$out" examples/cli/sample.jsonl || status=$?
echo
echo "== the tree"
find "$out" -name '*.jsonl' | sort | while read -r f; do
  printf '%6d lines  %s\n' "$(wc -l <"$f")" "$f"
done
echo
echo "== one line of $out/training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl"
head -n 1 "$out/training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl"
exit "${status:-0}"
