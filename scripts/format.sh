#!/usr/bin/env bash
# Formats the C and C++ sources with .clang-format (clang-format 14, Debian 12's).
#   scripts/format.sh           rewrites the files in place
#   scripts/format.sh --check   lists the files it would change, and fails if there are any
set -euo pipefail
cd "$(dirname "$0")/.."
cf="$(command -v clang-format-14 || command -v clang-format || true)"
[ -n "$cf" ] || { echo "clang-format 14 is not installed (Debian: clang-format-14)" >&2; exit 1; }
"$cf" --version | grep -q "version 14\." || { echo "$cf is not clang-format 14: $("$cf" --version)" >&2; exit 1; }
mapfile -t files < <(find include lib capi examples tests \
  \( -path tests/node/node_modules -o -path tests/fuzz/corpus -o -path tests/data \) -prune -o \
  -type f \( -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.hpp' \) -print | LC_ALL=C sort)
[ "${#files[@]}" -gt 0 ] || { echo "no sources found" >&2; exit 1; }
if [ "${1:-}" = --check ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! "$cf" --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then echo "not formatted: $f"; bad=1; fi
  done
  [ "$bad" -eq 0 ] && echo "${#files[@]} files formatted as .clang-format says"
  exit "$bad"
fi
"$cf" --style=file -i "${files[@]}"
echo "formatted ${#files[@]} files"
