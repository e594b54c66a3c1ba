"""CPU microseconds per request of each server under test, every request shape, one run.

    python -m bench.cpu_per_request [--rounds 3] [--seconds 4] [--only NAME ...]

Why: on a shared 2-core VM the requests/s of two runs a minute apart wander by +-20%, so a
ratio of two separate wrk runs says little. With the server pinned to its own cpu, its
throughput is the inverse of the CPU it spends per request; that figure, read from
``/proc`` (utime + stime of the server's whole process group) around each wrk run, is
stable to a few percent. Shapes are measured in alternating rounds, so a slow minute hits
all of them alike, and the report gives each shape's median and the ratios the issues'
targets name (a ratio of CPU per request is a ratio of requests/s at saturation).

Servers, all started here on loopback (nginx and wrk on the first cpu, every server under
test on the second, each idle while another is measured):

* ``bare``: bench/bare_proxy.py, the aiohttp pass-through ceiling;
* ``passthrough``: the sidecar on bench/configs/passthrough.yaml (every stage off);
* ``audit``: the same plus the file audit sink (bench/configs/audit-file.yaml);
* ``stages``: the sidecar on bench/configs/stages.yaml (JWT, RBAC, Redis limits,
  signatures), with a redis-server of its own.

Bounded: every wrk run is ``--seconds`` long (plus a hard timeout) and every process is
stopped at exit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import scenario_stages
from bench.harness import (
    POST_2K_BODY,
    Processes,
    Scenario,
    Settings,
    TargetContext,
    cpu_layout,
    parse_wrk,
    pinned,
    probe,
    start_backend,
    start_bare,
    start_sidecar,
    wrk_script,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    server: str          # key of the servers dict
    scenario: Scenario   # method, path, body, headers, prepare hook


@dataclass(frozen=True, slots=True)
class Target:
    base_url: str
    admin_url: str | None
    pgid: int


def _scenario(name: str, **kw: object) -> Scenario:
    return Scenario(name=name, description=name, **kw)  # type: ignore[arg-type]


SHAPES = (
    Shape("bare", "bare", _scenario("bare")),
    Shape("passthrough", "passthrough", _scenario("passthrough")),
    Shape("audit-file", "audit", _scenario("audit-file")),
    Shape("open", "stages", _scenario("open", path="/v1/open/ping")),
    Shape("jwt", "stages", _scenario("jwt", path="/v1/jwt/ping",
                                     prepare=scenario_stages.prepare_token)),
    Shape("rbac-jwt", "stages", _scenario("rbac-jwt", path="/v1/merchants/m-1/payments/p-1",
                                          prepare=scenario_stages.prepare_token)),
    Shape("limits", "stages", _scenario("limits", path="/v1/limited/m-1/payments/p-1",
                                        prepare=scenario_stages.prepare_token)),
    Shape("unsigned-post", "stages", _scenario(
        "unsigned-post", method="POST", path="/v1/unsigned/echo", body=POST_2K_BODY,
        headers={"Content-Type": "application/json"}, prepare=scenario_stages.prepare_token)),
    Shape("signed-post", "stages", _scenario(
        "signed-post", method="POST", path="/v1/signed/echo", body=POST_2K_BODY,
        prepare=scenario_stages.prepare_signed)),
)

# (numerator, denominator, target, issue): numerator's requests/s over denominator's, which
# is denominator's CPU per request over numerator's.
RATIOS = (
    ("passthrough", "bare", 0.90, "#2 sidecar, stages off / bare aiohttp proxy"),
    ("jwt", "open", 0.90, "#3 JWT (cache warm) / pass-through"),
    ("rbac-jwt", "open", 0.85, "#4 JWT + RBAC / pass-through"),
    ("limits", "open", 0.75, "#5 JWT + RBAC + Redis limits / pass-through"),
    ("limits", "passthrough", 0.75, "#5 the same / the stages-off sidecar"),
    ("signed-post", "unsigned-post", 0.85, "#6 signed POST / unsigned POST"),
    ("audit-file", "passthrough", 0.95, "#7 file audit sink on / off"),
)


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in process group ``pgid``."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:  # field 5 of stat: pgrp
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def measure(url: str, script: Path, pgid: int, settings: Settings,
            seconds: int) -> tuple[float, float]:
    """(CPU µs per request of the group, requests/s) of one bounded wrk run."""
    before = group_cpu_seconds(pgid)
    cmd = pinned(["wrk", "-t1", f"-c{settings.connections}", f"-d{seconds}s", "--latency",
                  "-s", str(script), url], settings.client_cpus, settings)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                         check=True)
    after = group_cpu_seconds(pgid)
    result = parse_wrk(res.stdout)
    if result.non_2xx or result.socket_errors:
        raise RuntimeError(f"{url}: {result.non_2xx} non-2xx, {result.socket_errors} errors")
    return (after - before) / result.requests * 1e6, result.rps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", action="append", default=[],
                        help="measure only these shapes (repeatable)")
    args = parser.parse_args(argv)
    client, server = cpu_layout()
    settings = Settings(duration=args.seconds, connections=args.connections, threads=1,
                        warmup=1, max_requests=0, pin=len(client + server) > 1,
                        client_cpus=client, server_cpus=server)
    shapes = [s for s in SHAPES if not args.only or s.name in args.only]
    needed = {s.server for s in shapes}
    with tempfile.TemporaryDirectory(prefix="sidecar-cpu-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        try:
            upstream = start_backend(procs, settings)
            setup_vars = dict(scenario_stages.setup(workdir)) if "stages" in needed else {}
            targets: dict[str, Target] = {}
            if "bare" in needed:
                url, proc = start_bare(procs, settings, upstream)
                targets["bare"] = Target(url, None, proc.pid)
            for server_name, config in (("passthrough", "passthrough.yaml"),
                                        ("audit", "audit-file.yaml"),
                                        ("stages", "stages.yaml")):
                if server_name in needed:
                    base, admin, proc = start_sidecar(
                        procs, settings, Scenario(name=server_name, description="",
                                                  config=config),
                        1, upstream, workdir, setup_vars)
                    targets[server_name] = Target(base, admin, proc.pid)
            scripts: dict[str, tuple[str, Path]] = {}
            for shape in shapes:
                target = targets[shape.server]
                headers = {}
                if shape.scenario.prepare is not None:
                    headers = dict(shape.scenario.prepare(TargetContext(
                        shape.server, target.base_url, target.admin_url, workdir,
                        setup_vars)).headers)
                url = target.base_url + shape.scenario.path
                problem = probe(url, shape.scenario, headers)
                if problem:
                    raise RuntimeError(f"{shape.name}: probe failed: {problem}")
                script = workdir / f"{shape.name}.lua"
                script.write_text(wrk_script(shape.scenario, headers))
                scripts[shape.name] = (url, script)
                measure(url, script, target.pgid, settings, 1)  # warm-up
            samples: dict[str, list[tuple[float, float]]] = {s.name: [] for s in shapes}
            for round_no in range(args.rounds):
                for shape in shapes:
                    url, script = scripts[shape.name]
                    sample = measure(url, script, targets[shape.server].pgid, settings,
                                     args.seconds)
                    samples[shape.name].append(sample)
                    print(f"round {round_no + 1}: {shape.name:14s} {sample[0]:7.1f} µs/req "
                          f"{sample[1]:8.0f} req/s", file=sys.stderr, flush=True)
        finally:
            procs.stop_all()
    report(samples)
    return 0


def report(samples: dict[str, list[tuple[float, float]]]) -> None:
    cpu = {name: statistics.median(s[0] for s in runs) for name, runs in samples.items()}
    rps = {name: statistics.median(s[1] for s in runs) for name, runs in samples.items()}
    print(f"{'shape':14s} {'µs/request':>10s} {'req/s':>8s}   (medians; every round)")
    for name, runs in samples.items():
        each = " ".join(f"{s[0]:.0f}" for s in runs)
        print(f"{name:14s} {cpu[name]:10.1f} {rps[name]:8.0f}   [{each}]")
    print()
    print("by CPU: ratio of the medians; paired: median of each round's ratio (the two shapes")
    print("of one round ran a few seconds apart, so a slow minute cancels out)")
    print(f"{'ratio (req/s at saturation)':52s} {'by CPU':>7s} {'paired':>7s} {'by rps':>7s}"
          f" {'target':>7s}")
    for num, den, target, label in RATIOS:
        if num in cpu and den in cpu:
            by_cpu = cpu[den] / cpu[num]
            paired = statistics.median(
                d[0] / n[0] for n, d in zip(samples[num], samples[den], strict=True))
            by_rps = rps[num] / rps[den]
            mark = "ok" if min(by_cpu, paired) >= target else "BELOW"
            print(f"{label:52s} {by_cpu:7.3f} {paired:7.3f} {by_rps:7.3f} {target:7.2f} {mark}")


if __name__ == "__main__":
    sys.exit(main())
