"""Composition root: builds every stage from config and wires them into a Pipeline.

This is the only module that knows every stage's constructor. A SIGHUP reload builds a new
pipeline beside the live one, starts it, swaps it in with one assignment (requests already
running finish on the old one) and closes the old one once it is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiohttp import web

from sidecar.audit import AuditLog
from sidecar.authn import JWTAuthenticator
from sidecar.clientip import TrustedProxies
from sidecar.config import ConfigError, LoadedConfig, load_config
from sidecar.config.audit import AuditConfig
from sidecar.config.auth import ForwardConfig
from sidecar.config.models import SidecarConfig
from sidecar.config.server import RedisConfig
from sidecar.config.signatures import effective_nonce_store
from sidecar.context import RouteMatch
from sidecar.headers import RequestHeaderPolicy
from sidecar.issuer import TokenIssuer
from sidecar.metrics import Metrics
from sidecar.pipeline import Limits, Pipeline, Stages
from sidecar.ratelimit import RateLimitStage
from sidecar.rbac import RBACAuthorizer
from sidecar.redisconn import RedisClient, build_redis, close_redis
from sidecar.routes import RouteTable
from sidecar.signatures.keys import load_response_key
from sidecar.signatures.signer import ResponseSigner
from sidecar.signatures.verifier import SignatureStage, build_nonce_store
from sidecar.stages import EventEmitter, ReadinessCheck, discard_event
from sidecar.upstream import Upstream

log = logging.getLogger("sidecar.app")


@dataclass
class Shared:
    """Process-level resources that outlive a pipeline: one Redis connection pool and the
    audit log (whose hash chain must continue across reloads). A reload keeps them unless
    their own config section changed."""

    redis_config: RedisConfig | None = None
    redis: RedisClient | None = None
    audit_config: AuditConfig | None = None
    audit: AuditLog | None = None

    @property
    def emit(self) -> EventEmitter:
        return self.audit.emit if self.audit is not None else discard_event

    async def close(self, keep: Shared | None = None) -> None:
        """Close what ``keep`` (the successor) does not reuse; audit before Redis."""
        if self.audit is not None and (keep is None or keep.audit is not self.audit):
            await self.audit.close()
        if self.redis is not None and (keep is None or keep.redis is not self.redis):
            await close_redis(self.redis)


async def open_shared(config: SidecarConfig, metrics: Metrics, old: Shared | None) -> Shared:
    """Shared resources for ``config``, reusing ``old``'s where the section is unchanged.

    Raises:
        AuditStartError: the audit spool directory is unusable.
    """
    shared = Shared(redis_config=config.redis, audit_config=config.audit)
    if old is not None and old.redis is not None and old.redis_config == config.redis:
        shared.redis = old.redis
    elif config.redis is not None:
        shared.redis = build_redis(config.redis)
    if (old is not None and old.audit is not None and old.audit_config == config.audit
            and shared.redis is old.redis):
        shared.audit = old.audit
    elif config.audit is not None:
        audit = AuditLog(config.audit, shared.redis, metrics)
        try:
            await audit.start()
        except BaseException:
            await shared.close(keep=old)
            raise
        shared.audit = audit
    return shared


@dataclass
class Built:
    """A pipeline and the resources it owns (closed together)."""

    pipeline: Pipeline
    resources: AsyncExitStack
    readiness_sources: list[ReadinessCheck]
    shared: Shared
    authenticator: JWTAuthenticator | None = None


async def build(config: SidecarConfig, metrics: Metrics, shared: Shared,
                previous: Built | None = None) -> Built:
    """Construct and start every stage of ``config`` over ``shared`` resources.

    ``previous`` is the pipeline being replaced on reload: stages carry over state that is
    expensive or rate-limited to rebuild (fetched JWKS).

    Raises:
        Exception: a stage could not start (the caller keeps the previous pipeline).
    """
    stack = AsyncExitStack()
    await stack.__aenter__()
    try:
        upstream = Upstream(config.upstream, config.server.max_body_bytes)
        await upstream.start()
        stack.push_async_callback(upstream.close)
        forward = config.auth.forward if config.auth is not None else ForwardConfig()
        stages = Stages(
            upstream=upstream,
            header_policy=RequestHeaderPolicy.build(
                forward.strip_prefixes, forward.headers.keys(),
                forward.authorization == "forward"),
            identity_header_names=tuple(forward.headers.keys()),
        )
        if config.rbac is not None:
            stages.router = RouteTable.from_config(config.rbac)
            stages.authorizer = RBACAuthorizer.from_config(config.rbac)
        readiness: list[ReadinessCheck] = []
        emit = shared.emit
        redis = shared.redis
        stages.audit = shared.audit

        limiter: RateLimitStage | None = None
        if config.rate_limits is not None:
            limiter = RateLimitStage(config.rate_limits, redis, metrics, emit,
                                     redis_config=config.redis)
            await limiter.start()
            stack.push_async_callback(limiter.close)
            stages.rate_limiter = limiter
            readiness.append(limiter)

        issuer: TokenIssuer | None = None
        if config.token_endpoint is not None and config.token_endpoint.enabled:
            issuer = TokenIssuer(
                config.token_endpoint, metrics, emit,
                charge_failure=limiter.check_unauthenticated if limiter is not None else None,
                charge_client=(lambda ctx: limiter.check_authenticated(ctx, ()))
                if limiter is not None else None)
            te = config.token_endpoint
            stages.local_endpoints = {
                te.path: (RouteMatch(None, "token_endpoint", {}, public=True), issuer),
                te.jwks_path: (RouteMatch(None, "jwks", {}, public=True), issuer),
            }
        authenticator: JWTAuthenticator | None = None
        if config.auth is not None:
            authenticator = JWTAuthenticator(
                config.auth, metrics, emit,
                builtin_keys=issuer.builtin_public_keys() if issuer is not None else None,
                previous=previous.authenticator if previous is not None else None)
            await authenticator.start()
            stack.push_async_callback(authenticator.close)
            stages.authenticator = authenticator
            readiness.append(authenticator)
        if config.signatures is not None:
            sig = config.signatures
            nonce_store = build_nonce_store(
                effective_nonce_store(config), redis,  # type: ignore[arg-type]
                config.redis.key_prefix if config.redis else "sidecar:",
                config.redis.timeout if config.redis else None)
            stages.signatures = SignatureStage(sig, nonce_store, metrics, emit)
            if sig.response is not None:
                stages.response_signer = ResponseSigner(load_response_key(sig.response))
        pipeline = Pipeline(
            stages,
            Limits(config.server.max_body_bytes, config.server.max_header_bytes,
                   config.server.max_url_bytes),
            TrustedProxies(config.server.trusted_proxies),
            metrics,
            tls=config.server.tls is not None,
            hsts_max_age=config.server.tls.hsts_max_age if config.server.tls else 0.0,
        )
        return Built(pipeline, stack, readiness, shared, authenticator)
    except BaseException:
        await stack.aclose()
        raise


class Runtime:
    """The live pipeline of one worker process, and its reload logic."""

    def __init__(self, loaded: LoadedConfig, metrics: Metrics) -> None:
        self.loaded = loaded
        self.metrics = metrics
        self._built: Built | None = None
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> SidecarConfig:
        return self.loaded.config

    async def start(self) -> None:
        shared = await open_shared(self.config, self.metrics, None)
        try:
            self._built = await build(self.config, self.metrics, shared)
        except BaseException:
            await shared.close()
            raise

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self.pipeline.handle(request)

    @property
    def pipeline(self) -> Pipeline:
        """The live pipeline; read per request, so a reload takes effect at the next one."""
        built = self._built
        assert built is not None, "Runtime.start() not awaited"
        return built.pipeline

    @property
    def in_flight(self) -> int:
        return self._built.pipeline.in_flight if self._built is not None else 0

    async def reload(self) -> bool:
        """Re-read the config file; swap pipelines if it is valid. Returns success."""
        async with self._reload_lock:
            source = self.loaded.source
            try:
                loaded = await asyncio.get_running_loop().run_in_executor(
                    None, load_config, source)
            except ConfigError as exc:
                return self._reject("; ".join(str(i) for i in exc.issues))
            restart_only = _restart_only_changes(self.config, loaded.config)
            if restart_only:
                return self._reject("changes need a restart: " + ", ".join(restart_only))
            old = self._built
            assert old is not None
            try:
                shared = await open_shared(loaded.config, self.metrics, old.shared)
            except Exception as exc:
                log.exception("config reload failed while opening shared resources")
                return self._reject(f"shared resources failed to start: {type(exc).__name__}")
            try:
                new = await build(loaded.config, self.metrics, shared, previous=old)
            except Exception as exc:
                await shared.close(keep=old.shared)
                log.exception("config reload failed while starting stages")
                return self._reject(f"stages failed to start: {type(exc).__name__}")
            self._built, self.loaded = new, loaded
            self.metrics.config_reloads.labels("success").inc()
            self._emit_reload("success")
            log.info("config reloaded from %s", source)
            task = asyncio.get_running_loop().create_task(_retire(old, successor=new.shared))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            return True

    def _reject(self, detail: str) -> bool:
        log.error("config reload rejected, keeping the running config: %s", detail)
        self.metrics.config_reloads.labels("failure").inc()
        self._emit_reload("failure")
        return False

    def _emit_reload(self, result: str) -> None:
        if self._built is not None:
            self._built.shared.emit("config_reload", {"result": result})

    async def readiness(self) -> Mapping[str, bool]:
        built = self._built
        if built is None:
            return {"config": False}
        checks: dict[str, bool] = {"config": True}
        checks["upstream"] = await built.pipeline.s.upstream.reachable()
        for source in built.readiness_sources:
            checks.update(source.readiness())
        return checks

    async def close(self, grace: float) -> None:
        """Close the pipeline once idle, then the audit log (flush) and Redis."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        built, self._built = self._built, None
        if built is not None:
            await _retire(built, grace)


def _restart_only_changes(old: SidecarConfig, new: SidecarConfig) -> list[str]:
    """Settings bound to sockets and processes: a reload cannot apply them."""
    changed = []
    if old.server.listen != new.server.listen:
        changed.append("server.listen")
    if old.server.workers != new.server.workers:
        changed.append("server.workers")
    if (old.server.tls is None) != (new.server.tls is None):
        changed.append("server.tls (on/off)")
    if old.admin.listen != new.admin.listen:
        changed.append("admin.listen")
    return changed


async def _retire(built: Built, grace: float = 30.0, successor: Shared | None = None) -> None:
    """Close a pipeline once its in-flight requests are done (or ``grace`` passes), then
    the shared resources its successor does not reuse."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(built.pipeline.wait_idle(), grace)
    await built.resources.aclose()
    await built.shared.close(keep=successor)
