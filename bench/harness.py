"""Reproducible throughput/latency benchmark of the sidecar against its ceilings.

For every scenario the same wrk load runs against four targets on loopback:

* ``direct``   - wrk -> nginx (the backend's own ceiling on this machine);
* ``bare``     - wrk -> bench/bare_proxy.py -> nginx (the aiohttp framework ceiling);
* ``sidecar``  - wrk -> ``python -m sidecar run -c CONFIG`` (one worker) -> nginx;
* ``sidecar2`` - the same with ``--workers 2``.

Scenarios are pluggable (see :class:`Scenario`, :func:`register` and bench/README.md):
a module ``bench/scenario_<name>.py`` that calls :func:`register` at import time is
picked up automatically. Every process the harness starts runs in its own session and
is killed on exit, on SIGINT/SIGTERM/SIGHUP and on error. Every load run is bounded in
time (``-d``) and in requests (a wrk Lua hook stops each thread after its share of
``BENCH_MAX_REQUESTS``), and wrk itself gets a hard subprocess timeout.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import json
import math
import os
import pkgutil
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
TARGETS = ("direct", "bare", "sidecar", "sidecar2")
SIDECAR_TARGETS = {"sidecar": 1, "sidecar2": 2}
READY_TIMEOUT = 30.0


# --------------------------------------------------------------------------- scenarios

@dataclass(frozen=True, slots=True)
class TargetContext:
    """What a scenario's ``prepare`` hook sees about the target about to be measured."""

    target: str              # direct | bare | sidecar | sidecar2
    base_url: str            # http://127.0.0.1:PORT of the target
    admin_url: str | None    # the sidecar's admin base URL; None for direct and bare
    workdir: Path            # this scenario's scratch dir (keys, generated files)
    setup_vars: Mapping[str, str]  # what ``setup`` returned


@dataclass(frozen=True, slots=True)
class Prepared:
    """Per-target additions from ``prepare``: request headers and wrk's environment."""

    headers: Mapping[str, str] = field(default_factory=dict)
    wrk_env: Mapping[str, str] = field(default_factory=dict)  # read in Lua via os.getenv


@dataclass(frozen=True, slots=True)
class Scenario:
    """One request shape measured against every target.

    ``config`` is a template under bench/configs/ (or an absolute path) in which
    ``{{listen}}``, ``{{admin_listen}}``, ``{{upstream}}``, ``{{workdir}}`` and every key
    returned by ``setup`` are replaced; ``${VAR}`` is left for the sidecar. ``setup(workdir)``
    runs once before any target starts (generate keys, write files) and returns extra
    template variables, which are also put in the sidecar's environment.
    ``prepare(ctx)`` runs per target once it is ready (fetch a token, pre-sign requests).
    ``lua`` is wrk Lua source appended after the generated method/body/headers lines; it may
    define ``request``, ``response`` and ``done`` (the harness chains its own hooks).
    """

    name: str
    description: str
    config: str = "passthrough.yaml"
    method: str = "GET"
    path: str = "/v1/bench/ping"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    lua: str = ""
    setup: Callable[[Path], Mapping[str, str]] | None = None
    prepare: Callable[[TargetContext], Prepared] | None = None
    targets: tuple[str, ...] = TARGETS
    probe: bool = True       # send one request first and require a 2xx (off for one-shot requests)


_REGISTRY: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    """Add a scenario. Raises ``ValueError`` on a duplicate name or an unknown target."""
    if scenario.name in _REGISTRY:
        raise ValueError(f"bench scenario {scenario.name!r} registered twice")
    unknown = set(scenario.targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"scenario {scenario.name!r}: unknown targets {sorted(unknown)}")
    _REGISTRY[scenario.name] = scenario
    return scenario


def scenarios() -> dict[str, Scenario]:
    """Every registered scenario, after importing ``bench/scenario_*.py`` modules."""
    extra = [m for m in os.environ.get("BENCH_SCENARIO_MODULES", "").split(",") if m]
    found = [f"bench.{m.name}" for m in pkgutil.iter_modules([str(BENCH_DIR)])
             if m.name.startswith("scenario_")]
    for module in sorted(found) + extra:
        importlib.import_module(module)
    return dict(_REGISTRY)


POST_2K_BODY = (b'{"amount":1000,"currency":"EUR","description":"'
                + b"x" * (2048 - 49) + b'"}')
assert len(POST_2K_BODY) == 2048

register(Scenario(
    name="passthrough",
    description="GET, public rule /**, no auth: the cost of the pipeline and forwarder",
))
register(Scenario(
    name="post-2k",
    description="POST with a 2 KiB JSON body, public rule /**: request body streaming",
    method="POST", path="/v1/bench/echo", headers={"Content-Type": "application/json"},
    body=POST_2K_BODY,
))


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True, slots=True)
class Settings:
    duration: int
    connections: int
    threads: int
    warmup: int
    max_requests: int
    pin: bool
    client_cpus: tuple[int, ...]
    server_cpus: tuple[int, ...]


def _seconds(text: str) -> int:
    text = text.strip().lower()
    factor = 60 if text.endswith("m") else 1
    return max(0, int(float(text.rstrip("sm")) * factor))


def cpu_layout() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(client cpus, server cpus): wrk and nginx share the first, the server under test
    gets the rest. With 1 cpu both are that cpu and pinning is off."""
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    if len(cpus) < 2:
        return cpus, cpus
    split = 1 if len(cpus) < 4 else 2
    return cpus[:split], cpus[split:]


def settings_from(args: argparse.Namespace) -> Settings:
    env = os.environ
    client, server = cpu_layout()
    pin = (args.pin if args.pin is not None else env.get("BENCH_PIN", "1") != "0")
    pin = pin and len(client + server) > 1 and shutil.which("taskset") is not None
    threads = int(args.threads or env.get("BENCH_THREADS") or max(1, min(2, len(client))))
    return Settings(
        duration=_seconds(args.duration or env.get("BENCH_DURATION", "10s")),
        connections=int(args.connections or env.get("BENCH_CONNECTIONS", "64")),
        threads=threads,
        warmup=_seconds(args.warmup or env.get("BENCH_WARMUP", "2s")),
        max_requests=int(env.get("BENCH_MAX_REQUESTS", "5000000")),
        pin=pin, client_cpus=client, server_cpus=server,
    )


def pinned(cmd: Sequence[str], cpus: Sequence[int], settings: Settings) -> list[str]:
    if not settings.pin:
        return list(cmd)
    return ["taskset", "-c", ",".join(map(str, cpus)), *cmd]


# --------------------------------------------------------------------------- processes

class Processes:
    """Every child the harness starts, each in its own session so its whole group dies."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, cmd: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path = REPO) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=dict(env) if env is not None else None,
                                start_new_session=True)
        self.children.append((name, proc, log))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        for name, child, log in list(self.children):
            if child is proc:
                _terminate(child, grace)
                log.close()
                self.children.remove((name, child, log))

    def stop_all(self) -> None:
        for _, proc, _log in reversed(self.children):
            _signal_group(proc, signal.SIGTERM)
        for _, proc, log in reversed(self.children):
            _terminate(proc, 5.0)
            log.close()
        self.children.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(5.0)
    _signal_group(proc, signal.SIGKILL)  # stragglers the group leader left behind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StartError(RuntimeError):
    """A process under test did not become ready."""


def wait_ready(url: str, proc: subprocess.Popen[bytes], procs: Processes, name: str,
               timeout: float = READY_TIMEOUT) -> None:
    """Poll ``url`` until it answers 200. Raises StartError with the log tail."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartError(f"{name} exited with code {proc.returncode}:\n"
                             f"{procs.log_tail(name)}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise StartError(f"{name} not ready at {url} after {timeout:.0f}s ({last}):\n"
                     f"{procs.log_tail(name)}")


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Replace ``{{key}}``; an unknown placeholder is an error, ``${VAR}`` is untouched."""
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        start = text.index("{{")
        raise ValueError(f"unreplaced placeholder {text[start:text.index('}}', start) + 2]}")
    return text


def start_backend(procs: Processes, settings: Settings) -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = procs.workdir / "nginx"
    for sub in ("", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = render_template((BENCH_DIR / "backend" / "nginx.conf").read_text(),
                           {"port": str(port), "prefix": str(prefix)})
    (prefix / "nginx.conf").write_text(conf)
    cmd = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
           "-e", str(prefix / "error.log")]
    proc = procs.start("nginx", pinned(cmd, settings.client_cpus, settings))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/", proc, procs, "nginx")
    return url


def start_bare(procs: Processes, settings: Settings, upstream: str) -> tuple[str, Any]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.bare_proxy", "--listen", f"127.0.0.1:{port}",
           "--upstream", upstream]
    proc = procs.start("bare", pinned(cmd, settings.server_cpus, settings))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/", proc, procs, "bare")
    return url, proc


def sidecar_available() -> str | None:
    """None when ``python -m sidecar run --help`` works, else why the legs are skipped."""
    try:
        res = subprocess.run([sys.executable, "-m", "sidecar", "run", "--help"], cwd=REPO,
                             capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`python -m sidecar run --help` failed: {exc}"
    if res.returncode != 0:
        tail = res.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return f"`python -m sidecar run --help` exited {res.returncode}: {' '.join(tail)}"
    return None


def start_sidecar(procs: Processes, settings: Settings, scenario: Scenario, workers: int,
                  upstream: str, workdir: Path, setup_vars: Mapping[str, str],
                  ) -> tuple[str, str, subprocess.Popen[bytes]]:
    """Write the scenario's config, check it, start the sidecar, wait for /readyz."""
    port, admin_port = free_port(), free_port()
    template = Path(scenario.config)
    if not template.is_absolute():
        template = BENCH_DIR / "configs" / template
    values = {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}",
              "upstream": upstream, "workdir": str(workdir), **setup_vars}
    config = workdir / f"sidecar-{scenario.name}-w{workers}.yaml"
    config.write_text(render_template(template.read_text(), values))
    env = {**os.environ, **setup_vars}
    check = subprocess.run([sys.executable, "-m", "sidecar", "check", "-c", str(config)],
                           cwd=REPO, env=env, capture_output=True, timeout=60, check=False)
    if check.returncode != 0:
        raise StartError(f"`sidecar check` rejected {config.name}:\n"
                         + check.stderr.decode(errors="replace").strip())
    name = f"sidecar-{scenario.name}-w{workers}"
    cmd = [sys.executable, "-m", "sidecar", "run", "-c", str(config)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = procs.start(name, pinned(cmd, settings.server_cpus, settings), env=env)
    admin = f"http://127.0.0.1:{admin_port}"
    wait_ready(admin + "/readyz", proc, procs, name)
    return f"http://127.0.0.1:{port}", admin, proc


# --------------------------------------------------------------------------- wrk

def lua_string(data: bytes) -> str:
    """A Lua string literal holding exactly ``data``."""
    out = []
    for byte in data:
        ch = chr(byte)
        if ch in '"\\' or not (32 <= byte < 127):
            out.append(f"\\{byte:03d}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_LUA_TAIL = """
-- harness: request cap per thread, and one JSON summary line
local bench_max = tonumber(os.getenv("BENCH_MAX_REQUESTS_PER_THREAD") or "0")
local bench_count = 0
local bench_user_response = response
response = function(status, headers, body)
  bench_count = bench_count + 1
  if bench_max > 0 and bench_count >= bench_max then wrk.thread:stop() end
  if bench_user_response then return bench_user_response(status, headers, body) end
end
local bench_user_done = done
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.2f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(75),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
  if bench_user_done then bench_user_done(summary, latency, requests) end
end
"""


def wrk_script(scenario: Scenario, headers: Mapping[str, str]) -> str:
    lines = ["-- generated by bench/harness.py", f'wrk.method = "{scenario.method}"']
    if scenario.body is not None:
        lines.append(f"wrk.body = {lua_string(scenario.body)}")
    for key, value in {**scenario.headers, **headers}.items():
        lines.append(f"wrk.headers[{lua_string(key.encode())}] = {lua_string(value.encode())}")
    return "\n".join(lines) + "\n" + scenario.lua + "\n" + _LUA_TAIL


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    capped: bool = False     # stopped by BENCH_MAX_REQUESTS: wrk still ran its whole -d, so
                             # req/s understates the target (raise the cap or shorten -d)


def parse_wrk(output: str) -> WrkResult:
    """Read the harness's ``BENCH_JSON`` line. Raises ValueError when wrk printed none."""
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise ValueError("wrk printed no BENCH_JSON summary:\n" + output[-2000:])
    lat, err = data["latency_us"], data["errors"]
    seconds = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"], seconds=round(seconds, 3),
        rps=round(data["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=lat["p50"] / 1000, p75_ms=lat["p75"] / 1000, p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000, max_ms=lat["max"] / 1000, non_2xx=err["status"],
        socket_errors=err["connect"] + err["read"] + err["write"] + err["timeout"],
    )


def run_wrk(url: str, script: Path, settings: Settings, seconds: int,
            wrk_env: Mapping[str, str]) -> tuple[WrkResult, str]:
    """One bounded wrk run: ``seconds`` long, at most ``max_requests``, hard-killed after."""
    per_thread = math.ceil(settings.max_requests / settings.threads)
    cmd = pinned(["wrk", f"-t{settings.threads}", f"-c{settings.connections}",
                  f"-d{seconds}s", "--latency", "--timeout", "5s", "-s", str(script), url],
                 settings.client_cpus, settings)
    env = {**os.environ, **wrk_env, "BENCH_MAX_REQUESTS_PER_THREAD": str(per_thread)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 30,
                         check=False)
    output = res.stdout + res.stderr
    if res.returncode != 0:
        raise RuntimeError(f"wrk exited {res.returncode}:\n{output[-2000:]}")
    result = parse_wrk(output)
    if settings.max_requests and result.requests >= per_thread * settings.threads:
        result = dataclasses.replace(result, capped=True)
    return result, output


def probe(url: str, scenario: Scenario, headers: Mapping[str, str]) -> str | None:
    """One request of the scenario's shape; None on 2xx, else what went wrong."""
    req = urllib.request.Request(url, data=scenario.body, method=scenario.method,  # noqa: S310
                                 headers={**scenario.headers, **headers})
    try:
        with urllib.request.urlopen(req, timeout=5.0) as resp:  # noqa: S310 - loopback
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read(300).decode(errors='replace')}"
    except OSError as exc:
        return str(exc)


# --------------------------------------------------------------------------- the run

@dataclass
class Leg:
    scenario: str
    target: str
    result: WrkResult | None = None
    skipped: str | None = None


def measure(scenario: Scenario, target: str, base_url: str, admin_url: str | None,
            workdir: Path, setup_vars: Mapping[str, str], settings: Settings) -> Leg:
    """Probe, warm up and measure one target; a failure skips the leg, not the bench."""
    try:
        return _measure(scenario, target, base_url, admin_url, workdir, setup_vars, settings)
    except Exception as exc:  # a scenario hook or wrk failing must not abort the others
        return Leg(scenario.name, target, skipped=f"{type(exc).__name__}: {exc}")


def _measure(scenario: Scenario, target: str, base_url: str, admin_url: str | None,
             workdir: Path, setup_vars: Mapping[str, str], settings: Settings) -> Leg:
    prepared = Prepared()
    if scenario.prepare is not None:
        prepared = scenario.prepare(TargetContext(target, base_url, admin_url, workdir,
                                                  setup_vars))
    url = base_url + scenario.path
    if scenario.probe and (problem := probe(url, scenario, prepared.headers)):
        return Leg(scenario.name, target, skipped=f"probe request failed: {problem}")
    script = workdir / f"{scenario.name}-{target}.lua"
    script.write_text(wrk_script(scenario, prepared.headers))
    if settings.warmup:
        run_wrk(url, script, settings, settings.warmup, prepared.wrk_env)
    result, output = run_wrk(url, script, settings, settings.duration, prepared.wrk_env)
    (workdir / f"{scenario.name}-{target}.wrk.txt").write_text(output)
    print(f"  {target:<9} {result.rps:>10,.0f} req/s  p50 {result.p50_ms:7.3f} ms"
          f"  p99 {result.p99_ms:7.3f} ms  non-2xx {result.non_2xx}"
          + ("  CAPPED by BENCH_MAX_REQUESTS" if result.capped else ""), flush=True)
    return Leg(scenario.name, target, result)


def run_scenario(scenario: Scenario, targets: Sequence[str], procs: Processes,
                 settings: Settings, fixed: dict[str, str], sidecar_skip: str | None,
                 root: Path) -> list[Leg]:
    workdir = root / scenario.name
    workdir.mkdir(parents=True, exist_ok=True)
    setup_vars = dict(scenario.setup(workdir)) if scenario.setup else {}
    print(f"\n== {scenario.name}: {scenario.description}", flush=True)
    legs = []
    for target in [t for t in targets if t in scenario.targets]:
        if target in fixed:
            legs.append(measure(scenario, target, fixed[target], None, workdir, setup_vars,
                                settings))
            continue
        if sidecar_skip:
            legs.append(Leg(scenario.name, target, skipped=sidecar_skip))
            continue
        try:
            url, admin, proc = start_sidecar(procs, settings, scenario,
                                             SIDECAR_TARGETS[target], fixed["upstream"],
                                             workdir, setup_vars)
        except StartError as exc:
            legs.append(Leg(scenario.name, target, skipped=str(exc)))
            continue
        try:
            legs.append(measure(scenario, target, url, admin, workdir, setup_vars, settings))
        finally:
            procs.stop(proc)
    for leg in legs:
        if leg.skipped:
            print(f"  {leg.target:<9} SKIPPED: {leg.skipped}", flush=True)
    return legs


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks kill the children
    (SIGINT already raises KeyboardInterrupt)."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_bench(chosen: Sequence[Scenario], targets: Sequence[str], settings: Settings) -> list[Leg]:
    """Start nginx (and the bare proxy), run every scenario against every target, and
    stop every process started, whatever happens. Raises StartError when nginx or the
    bare proxy cannot start."""
    sidecar_skip = None
    if any(t in SIDECAR_TARGETS for t in targets):
        sidecar_skip = sidecar_available()
        if sidecar_skip:
            print(f"sidecar legs will be skipped: {sidecar_skip}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    procs = Processes(root)
    legs: list[Leg] = []
    try:
        with _signals_raise():
            backend = start_backend(procs, settings)
            fixed = {"upstream": backend, "direct": backend}
            if "bare" in targets:
                fixed["bare"], _ = start_bare(procs, settings, backend)
            for scenario in chosen:
                legs += run_scenario(scenario, targets, procs, settings, fixed, sidecar_skip,
                                     root)
    finally:
        procs.stop_all()
        if os.environ.get("BENCH_KEEP_WORKDIR") == "1":
            print(f"work dir kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return legs
