"""The admin listener: /healthz (alive), /readyz (ready), /metrics. Never the public port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from sidecar.metrics import Metrics

ReadinessProbe = Callable[[], Awaitable[Mapping[str, bool]]]


def build_admin_app(metrics: Metrics, readiness: ReadinessProbe) -> web.Application:
    """The admin aiohttp application. ``readiness`` returns dependency name -> ready."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        try:
            checks = dict(await asyncio.wait_for(readiness(), timeout=3.0))
        except TimeoutError:
            checks = {"readiness_probe": False}
        ready = all(checks.values())
        return web.Response(
            status=200 if ready else 503, content_type="application/json",
            text=json.dumps({"status": "ready" if ready else "not_ready", "checks": checks}),
        )

    async def metrics_handler(_: web.Request) -> web.Response:
        metrics.flush()  # on the loop thread, which owns the pending samples
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return web.Response(body=body, headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app
