#!/usr/bin/env bash
# CPU microseconds per request of ONE running sidecar, alternating request shapes, so that
# stage costs are compared inside one process and one minute (rps ratios of separate runs
# on a shared 2-core VM wander by +-20%). Loopback only; each wrk run is bounded (-d).
#
# usage: bench/stage_cpu.sh PID BASE_URL TOKEN WORKDIR [ROUNDS]
#   PID      the sidecar worker (pinned to its own cpu, e.g. taskset -c 1)
#   BASE_URL http://127.0.0.1:PORT of a sidecar running bench/configs/stages.yaml
#   WORKDIR  holds body, signed.lua and unsigned.lua (pre-signed 2 KiB POSTs)
set -euo pipefail
pid=$1; base=$2; token=$3; work=$4; rounds=${5:-3}
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
measure() {  # name, wrk args...
  local name=$1; shift
  local before after out req
  before=$(cpu)
  out=$(taskset -c 0 wrk -t1 -c64 -d4s "$@")
  after=$(cpu)
  req=$(echo "$out" | awk '/requests in/ {print $1}')
  python3 -c "print(f'{\"$name\":14s} {($after-$before)/$tck/$req*1e6:7.1f} us/request')"
}
auth=(-H "Authorization: Bearer $token")
for _ in $(seq "$rounds"); do
  measure open "$base/v1/open/ping"
  measure jwt "${auth[@]}" "$base/v1/jwt/ping"
  measure rbac-jwt "${auth[@]}" "$base/v1/merchants/m-1/payments/p-1"
  measure limits "${auth[@]}" "$base/v1/limited/m-1/payments/p-1"
  measure unsigned-post -s "$work/unsigned.lua" "$base/v1/unsigned/echo"
  measure signed-post -s "$work/signed.lua" "$base/v1/signed/echo"
done
