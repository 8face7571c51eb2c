#!/usr/bin/env bash
# Installs the Debian packages a task needs, only when something is missing.
# Usage: scripts/install-deps.sh build|test|bench (bench: what test needs, and LMDB for one benchmark)
set -euo pipefail
what="${1:-build}"

pkgs=(build-essential cmake pkg-config libcurl4-openssl-dev libssl-dev libsqlite3-dev libhiredis-dev rapidjson-dev)
if [ "$what" = bench ]; then
  # tests/bench/bench_store_pattern.cpp compares the dedup store's access pattern in SQLite and LMDB.
  pkgs+=(liblmdb-dev)
  what=test
fi
if [ "$what" = test ]; then
  pkgs+=(catch2 python3 python3-pandas python3-botocore)
  # pip installs the Python wrapper offline into a venv (test python_pip_install).
  pkgs+=(python3-pip python3-setuptools python3-wheel python3-venv)
  # The format check (test format_check) pins Debian 12's clang-format.
  pkgs+=(clang-format-14)
  # A real Redis for the Redis dedup store's tests (redis-cli comes with redis-tools).
  pkgs+=(redis-server redis-tools)
  # strace: a test reads the system calls of a run (the directory sink's journal is synced).
  pkgs+=(strace)
  # The openssl command: the Redis-over-TLS tests make their CA and certificates with it.
  pkgs+=(openssl)
  # Ceph RGW, the S3 server that checks signatures and conditional writes.
  pkgs+=(ceph-mon ceph-osd radosgw ceph-common ceph-base uuid-runtime curl)
  # node and npm (DuckDB for the interop tests): any installed ones will do.
  command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
  command -v npm >/dev/null 2>&1 || pkgs+=(npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
