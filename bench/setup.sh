#!/usr/bin/env bash
# Install what the benchmark needs, idempotently: wrk and nginx (Debian's nginx-light),
# and with --promtool also Debian's prometheus package for `promtool` (used by
# tests/integration/test_deploy_files.py to check deploy/prometheus/*.yml).
# Installs with apt-get as root (or through sudo); does nothing when all is present.
set -euo pipefail

want_promtool=0
for arg in "$@"; do
  case "$arg" in
    --promtool) want_promtool=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

packages=()
command -v wrk >/dev/null 2>&1 || packages+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
command -v taskset >/dev/null 2>&1 || packages+=(util-linux)
if [ "$want_promtool" = 1 ] && ! command -v promtool >/dev/null 2>&1; then
  packages+=(prometheus)
fi

if [ "${#packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "setup.sh: need ${packages[*]} but am not root and have no sudo" >&2
    exit 1
  fi
  echo "setup.sh: installing ${packages[*]}" >&2
  # Packages with services (nginx, prometheus) must not start them: the bench runs its
  # own nginx on a free loopback port and promtool needs no server. policy-rc.d answers
  # 101 ("action forbidden") for the duration of the install only.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 0755 "$policy"
    made_policy=1
  fi
  cleanup() { if [ "$made_policy" = 1 ]; then "${sudo[@]}" rm -f "$policy"; fi; }
  trap cleanup EXIT
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# The harness runs `python -m sidecar` and `python -m bench.bare_proxy` from the repo:
# the project's dependencies must be importable.
python="${PYTHON:-python3}"
if ! "$python" -c 'import aiohttp, yaml, pydantic, prometheus_client' 2>/dev/null; then
  echo "setup.sh: installing the project's dependencies (pip install -e .)" >&2
  "$python" -m pip install -q -e "$(cd "$(dirname "$0")/.." && pwd)"
fi
