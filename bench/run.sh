#!/usr/bin/env bash
# Reproducible benchmark: bash bench/run.sh [python -m bench options]
# Environment: BENCH_DURATION (10s), BENCH_CONNECTIONS (64), BENCH_THREADS, BENCH_WARMUP (2s),
# BENCH_MAX_REQUESTS (5000000), BENCH_PIN (1), BENCH_SCENARIOS, BENCH_TARGETS.
# See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"

bash bench/setup.sh

# The harness kills every process it starts on exit; this trap forwards INT/TERM/HUP to
# it so that also holds when run.sh itself is signalled.
"$python" -m bench --skip-setup "$@" &
bench_pid=$!
trap 'kill -TERM "$bench_pid" 2>/dev/null || true' INT TERM HUP
status=0
wait "$bench_pid" || status=$?
# wait returns early when a trapped signal arrives: wait again for the harness's cleanup.
while kill -0 "$bench_pid" 2>/dev/null; do wait "$bench_pid" || status=$?; done
exit "$status"
