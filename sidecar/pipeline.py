"""The request path: one function over the ordered stages (SPEC "Order of checks").

1 size limits and path safety -> 2 route match -> 3 authentication -> 4 RBAC ->
5 rate limits -> 6 signature and digest -> 7 forward -> 8 audit and metrics.

This is the only catch-all in the program. Stages raise ``SidecarError``; everything is
rendered here once as problem+json, audited and counted, for allowed and denied requests
alike. A request denied at a step consumes nothing at later steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from sidecar.audit.redact import safe_string
from sidecar.clientip import TrustedProxies
from sidecar.context import Identity, RequestContext, RouteMatch
from sidecar.headers import RequestHeaderPolicy, upstream_request_headers
from sidecar.ids import random_id
from sidecar.metrics import Metrics
from sidecar.pathsafety import check_path, has_method_override_query
from sidecar.problem import (
    PROBLEM_CONTENT_TYPE,
    BadRequest,
    HeadersTooLarge,
    InternalError,
    NoRoute,
    PayloadTooLarge,
    SidecarError,
    URITooLong,
    problem_body,
)
from sidecar.ratelimit import rate_limit_headers
from sidecar.stages import (
    AuditLog,
    Authenticator,
    Authorizer,
    LocalEndpoint,
    RateLimiter,
    ResponseSigner,
    Router,
    SignatureVerifier,
)
from sidecar.tls import client_cert_of
from sidecar.upstream import Upstream

log = logging.getLogger("sidecar.pipeline")

_REQUEST_ID_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


class MethodOverride(BadRequest):
    code = "method_override"
    detail = "Method-override parameters are not accepted."


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int
    max_header_bytes: int
    max_url_bytes: int


@dataclass(slots=True)
class Stages:
    """Everything the pipeline runs, built by ``app.py``. ``None`` means the stage is off."""

    upstream: Upstream
    header_policy: RequestHeaderPolicy
    router: Router | None = None
    authenticator: Authenticator | None = None
    authorizer: Authorizer | None = None
    rate_limiter: RateLimiter | None = None
    signatures: SignatureVerifier | None = None
    response_signer: ResponseSigner | None = None
    audit: AuditLog | None = None
    local_endpoints: Mapping[str, tuple[RouteMatch, LocalEndpoint]] = field(default_factory=dict)
    """Paths the sidecar answers itself, with the pseudo-rule they are counted under."""
    identity_header_names: Sequence[str] = ()


class Pipeline:
    """Runs the stages over one request. Immutable once built; a reload builds a new one."""

    def __init__(self, stages: Stages, limits: Limits, trusted: TrustedProxies,
                 metrics: Metrics, tls: bool, hsts_max_age: float = 0.0,
                 realm: str = "sidecar") -> None:
        self.s = stages
        self.limits = limits
        self.trusted = trusted
        self.metrics = metrics
        self.tls = tls
        self.realm = realm
        self._scheme = "https" if tls else "http"
        # aiohttp would announce its name and version; say only what we are.
        self._fixed_headers: dict[str, str] = {"Server": "sidecar"}
        if tls and hsts_max_age > 0:
            self._fixed_headers["Strict-Transport-Security"] = (
                f"max-age={int(hsts_max_age)}; includeSubDomains")
        self.in_flight = 0
        self._idle_waiters: list[asyncio.Future[None]] = []

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        ctx = self._context(request)
        self.in_flight += 1
        response: web.StreamResponse | None = None
        try:
            response = await self._run(request, ctx)
            ctx.status = response.status
            return response
        except SidecarError as err:
            response = self._problem(err, ctx)
            return response
        except Exception:
            log.exception("unexpected error; request_id=%s", ctx.request_id)
            response = self._problem(InternalError("unexpected exception"), ctx)
            return response
        finally:
            self.in_flight -= 1
            if not self.in_flight and self._idle_waiters:
                self._wake_idle()
            self._observe(ctx)

    async def wait_idle(self) -> None:
        """Return once no request is running (a retired pipeline closes on it)."""
        if self.in_flight:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _context(self, request: web.BaseRequest) -> RequestContext:
        # The peer is fixed per connection; the server's protocol caches it (a getpeername
        # per request is measurable).
        peer_ip = getattr(request.protocol, "peer_ip", None) or request.remote or ""
        request_id = ""
        client_ip = forwarded_for = peer_ip
        if self.trusted and self.trusted.trusts(peer_ip):
            address = self.trusted.resolve(peer_ip, request.headers.getall("X-Forwarded-For", ()))
            client_ip, forwarded_for = address.client_ip, address.forwarded_for
            incoming = request.headers.get("X-Request-Id", "")
            # Kept only when it is also fit for the audit log as is (no card number, no
            # token): the audit builder records ctx.request_id without another scan.
            if (0 < len(incoming) <= 128 and _REQUEST_ID_CHARS.issuperset(incoming)
                    and safe_string(incoming) == incoming):
                request_id = incoming
        raw_path, _, query = request.raw_path.partition("?")
        return RequestContext(
            request_id=request_id or random_id(),
            method=request.method,
            path=raw_path,
            query=query,
            client_ip=client_ip,
            peer_ip=peer_ip,
            scheme=self._scheme,
            host=request.headers.get("Host", ""),
            started=time.perf_counter(),
            forwarded_for=forwarded_for,
            client_cert=client_cert_of(request.transport) if self.tls else None,
        )

    async def _run(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        s = self.s
        # 1. size limits and path safety
        self._check_limits(request, ctx)
        local = s.local_endpoints.get(ctx.path)
        if local is not None:
            ctx.route, endpoint = local
            if s.rate_limiter is not None:
                ctx.rate_limit = await s.rate_limiter.check_unauthenticated(ctx)
            return await endpoint.handle(request, ctx)
        # 2. route
        if s.router is None:
            raise NoRoute("no rbac rules configured: closed by default")
        ctx.route = s.router.match(ctx.method, ctx.path)
        identity_headers: Mapping[str, str] = {}
        if ctx.route.public:
            if s.rate_limiter is not None:
                ctx.rate_limit = await s.rate_limiter.check_unauthenticated(ctx)
        else:
            # 3. authentication
            if s.authenticator is None:
                raise NoRoute("rule needs a token but no auth section is configured")
            authorization = request.headers.getall("Authorization", ())
            ctx.identity = await self._authenticate(authorization, ctx)
            # 4. RBAC
            roles = None
            if s.authorizer is not None:
                roles = s.authorizer.authorize(ctx.identity, ctx.route, ctx.client_cert)
            # 5. rate limits of the client and rule
            if s.rate_limiter is not None:
                ctx.rate_limit = await s.rate_limiter.check_authenticated(
                    ctx, ctx.route.rule.rate_limits, headers=request.headers)
            identity_headers = s.authenticator.identity_headers(ctx.identity, roles)
        # 6. signature and digest
        body: bytes | None = None
        if s.signatures is not None and s.signatures.required_for(ctx.route):
            body = await read_body(request, self.limits.max_body_bytes)
            ctx.signature_keyid = await s.signatures.verify(request, ctx, body)
        # 7. forward
        headers = upstream_request_headers(
            request.headers, s.header_policy, self._sidecar_headers(ctx, identity_headers))
        sign_response = None
        if s.response_signer is not None:
            signer = s.response_signer

            def sign_response(status: int, headers: CIMultiDict[str],
                              content: bytes) -> Mapping[str, str]:
                return signer.sign(request, status, headers, content)

        response, ctx.upstream_seconds = await s.upstream.forward(
            request, headers, body, self._response_headers(ctx), sign_response)
        return response

    async def _authenticate(self, authorization: Sequence[str],
                            ctx: RequestContext) -> Identity:
        s = self.s
        assert s.authenticator is not None
        limiter = s.rate_limiter
        # SECURITY: an IP that burnt its unauthenticated budget gets no more crypto work
        # unless its token is already verified (CPU exhaustion by garbage tokens).
        if (limiter is not None and limiter.unauthenticated_exhausted(ctx)
                and not s.authenticator.is_cached(authorization)):
            raise limiter.exhausted_error(ctx)
        try:
            return await s.authenticator.authenticate(authorization, ctx.client_cert)
        except SidecarError as err:
            if limiter is not None and err.status == 401:
                await limiter.check_unauthenticated(ctx)  # charge the failure
            raise

    def _check_limits(self, request: web.BaseRequest, ctx: RequestContext) -> None:
        limits = self.limits
        if len(request.raw_path) > limits.max_url_bytes:
            raise URITooLong(f"request target of {len(request.raw_path)} bytes")
        raw_headers = request.raw_headers
        header_bytes = sum(map(len, chain.from_iterable(raw_headers))) + 4 * len(raw_headers)
        if header_bytes > limits.max_header_bytes:
            raise HeadersTooLarge(f"{header_bytes} header bytes")
        length = request.content_length
        if length is not None and length > limits.max_body_bytes:
            raise PayloadTooLarge(f"Content-Length {length}")
        check_path(ctx.path)
        if has_method_override_query(ctx.query):
            raise MethodOverride("_method query parameter")

    def _sidecar_headers(self, ctx: RequestContext,
                         identity_headers: Mapping[str, str]) -> dict[str, str]:
        headers = {
            "X-Request-Id": ctx.request_id,
            "X-Forwarded-For": ctx.forwarded_for,
            "X-Forwarded-Proto": ctx.scheme,
        }
        if ctx.host:
            headers["X-Forwarded-Host"] = ctx.host
        headers.update(identity_headers)
        return headers

    def _response_headers(self, ctx: RequestContext) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict(self._fixed_headers)
        headers["X-Request-Id"] = ctx.request_id
        if ctx.rate_limit is not None:
            headers.update(rate_limit_headers(ctx.rate_limit))
        return headers

    def _problem(self, err: SidecarError, ctx: RequestContext) -> web.Response:
        ctx.status = err.status
        ctx.reason = err.code
        ctx.stage = err.stage
        headers = self._response_headers(ctx)
        headers.update(err.headers)
        headers["Content-Type"] = PROBLEM_CONTENT_TYPE
        headers["Cache-Control"] = "no-store"
        if err.log_detail:
            log.info("denied request_id=%s stage=%s reason=%s detail=%s",
                     ctx.request_id, err.stage, err.code, err.log_detail)
        return web.Response(status=err.status, body=problem_body(err, ctx.request_id),
                            headers=headers)

    def _observe(self, ctx: RequestContext) -> None:
        elapsed = time.perf_counter() - ctx.started
        m = self.metrics
        rule = ctx.rule_name
        m.count_request(rule, ctx.method, ctx.status, ctx.stage, ctx.reason, elapsed,
                        ctx.upstream_seconds)
        if self.s.audit is not None:
            self.s.audit.record_request(ctx)


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """Buffer the whole body, refusing more than ``limit`` bytes (signed routes only)."""
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"request body passed {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)

