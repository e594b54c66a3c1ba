"""``python -m bench``: the command line and the report (table + results JSON).

The machinery (scenario registry, processes, wrk) is in :mod:`bench.harness`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import (
    BENCH_DIR,
    REPO,
    TARGETS,
    Leg,
    Settings,
    StartError,
    run_bench,
    scenarios,
    settings_from,
)


def ratios(legs: Sequence[Leg]) -> dict[str, dict[str, float]]:
    by = {(leg.scenario, leg.target): leg.result for leg in legs if leg.result}
    out: dict[str, dict[str, float]] = {}
    pairs = {"bare/direct": ("bare", "direct"), "sidecar/bare": ("sidecar", "bare"),
             "sidecar2/bare": ("sidecar2", "bare"), "sidecar2/sidecar": ("sidecar2", "sidecar")}
    for name in dict.fromkeys(leg.scenario for leg in legs):
        for label, (a, b) in pairs.items():
            ra, rb = by.get((name, a)), by.get((name, b))
            if ra and rb and rb.rps:
                out.setdefault(name, {})[label] = round(ra.rps / rb.rps, 3)
    return out


def table(legs: Sequence[Leg], ratio: Mapping[str, Mapping[str, float]]) -> str:
    w = max([len("scenario"), *(len(leg.scenario) for leg in legs)])
    head = (f"{'scenario':<{w}} {'target':<9} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'non-2xx':>8} {'errors':>7}")
    rows = [head, "-" * len(head)]
    for leg in legs:
        r = leg.result
        if r is None:
            rows.append(f"{leg.scenario:<{w}} {leg.target:<9} {'skipped':>10}")
            continue
        flag = ("  <- not all 2xx: check the config" if r.non_2xx else "") + (
            "  <- capped by BENCH_MAX_REQUESTS" if r.capped else "")
        rows.append(f"{leg.scenario:<{w}} {leg.target:<9} {r.rps:>10,.0f} {r.p50_ms:>8.3f} "
                    f"{r.p99_ms:>8.3f} {r.non_2xx:>8} {r.socket_errors:>7}{flag}")
    for name, values in ratio.items():
        rows.append(f"{name}: " + "  ".join(f"{k} = {v:.2f}" for k, v in values.items()))
    return "\n".join(rows)


def machine_info(settings: Settings) -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        with suppress(OSError, subprocess.SubprocessError):
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            return (res.stdout + res.stderr).strip().splitlines()[0]
        return "unknown"

    import aiohttp

    try:
        uv: str | None = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uv = None
    return {
        "cpus": len(os.sched_getaffinity(0)), "loadavg": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(), "aiohttp": aiohttp.__version__, "uvloop": uv,
        "wrk": version(["wrk", "--version"]), "nginx": version(["nginx", "-v"]),
        "commit": version(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "pinning": {"enabled": settings.pin, "client_cpus": settings.client_cpus,
                    "server_cpus": settings.server_cpus},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=harness.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--scenario", action="append",
                        help="scenario to run (repeatable; default $BENCH_SCENARIOS or all)")
    parser.add_argument("-t", "--target", action="append", choices=TARGETS,
                        help="target to measure (repeatable; default $BENCH_TARGETS or all)")
    parser.add_argument("-d", "--duration", help="per run, e.g. 10s (default $BENCH_DURATION)")
    parser.add_argument("-c", "--connections", help="wrk -c (default $BENCH_CONNECTIONS, 64)")
    parser.add_argument("--threads", help="wrk -t (default: 1 per client cpu, at most 2)")
    parser.add_argument("--warmup", help="warm-up run before each measurement (default 2s)")
    parser.add_argument("--pin", dest="pin", action="store_true", default=None,
                        help="pin wrk+nginx and the server to separate cpus (default)")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--skip-setup", action="store_true", help="do not run bench/setup.sh")
    parser.add_argument("--list", action="store_true", help="list scenarios and exit")
    parser.add_argument("--results-dir", default=str(BENCH_DIR / "results"))
    args = parser.parse_args(argv)

    registry = scenarios()
    if args.list:
        for sc in registry.values():
            print(f"{sc.name:<16} {sc.description}")
        return 0
    wanted = args.scenario or [s for s in os.environ.get("BENCH_SCENARIOS", "").split(",") if s]
    unknown = [s for s in wanted if s not in registry]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {sorted(registry)}")
    chosen = [registry[s] for s in wanted] if wanted else list(registry.values())
    targets = args.target or [t for t in os.environ.get("BENCH_TARGETS", "").split(",") if t]
    targets = [t for t in TARGETS if t in targets] if targets else list(TARGETS)
    if not args.skip_setup and os.environ.get("BENCH_SKIP_SETUP") != "1":
        subprocess.run(["bash", str(BENCH_DIR / "setup.sh")], check=True)
    settings = settings_from(args)
    print(f"wrk -t{settings.threads} -c{settings.connections} -d{settings.duration}s "
          f"(warm-up {settings.warmup}s, cap {settings.max_requests:,} requests); pinning: "
          + (f"wrk+nginx on cpu {settings.client_cpus}, server on cpu {settings.server_cpus}"
             if settings.pin else "off"), flush=True)
    try:
        legs = run_bench(chosen, targets, settings)
    except StartError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1

    ratio = ratios(legs)
    print("\n" + table(legs, ratio))
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out_dir / f"{stamp}.json"
    out.write_text(json.dumps({
        "time": stamp, "machine": machine_info(settings), "settings": asdict(settings),
        "scenarios": {s.name: s.description for s in chosen},
        "legs": [{"scenario": leg.scenario, "target": leg.target, "skipped": leg.skipped,
                  **({"result": asdict(leg.result)} if leg.result else {})} for leg in legs],
        "ratios": ratio,
    }, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
