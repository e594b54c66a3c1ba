#!/usr/bin/env bash
# External TLS scan of the sidecar listener at min_version 1.3 and 1.2 (see docs/tls.md).
#
#   bash bench/tls_scan.sh [python -m bench.tls_scan options]
#
# sslyze pins an older `cryptography` than the sidecar, so it is installed in its own
# virtualenv (default .cache/sslyze-venv under the repo, or $SSLYZE_VENV) on first use;
# set SSLYZE_PYTHON to use an interpreter that already has sslyze. Needs `openssl`.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"

if [[ -z "${SSLYZE_PYTHON:-}" ]]; then
    venv="${SSLYZE_VENV:-.cache/sslyze-venv}"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import sslyze" 2>/dev/null; then
        echo "installing sslyze into $venv" >&2
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet sslyze
    fi
    SSLYZE_PYTHON="$venv/bin/python"
fi
export SSLYZE_PYTHON

# The scanner stops every sidecar it starts (own session, SIGTERM then SIGKILL); this
# bounds the whole run as well.
exec timeout --signal=TERM --kill-after=15 900 "$python" -m bench.tls_scan "$@"
