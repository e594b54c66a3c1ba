"""The ports between the pipeline and its stages.

``pipeline.py`` depends only on these protocols; ``app.py`` builds the concrete stages from
config and hands them over. Each stage decides in pure code and raises a
:class:`sidecar.problem.SidecarError` to deny; none of them writes a response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from sidecar.context import ClientCert, Identity, RateLimitOutcome, RequestContext, RouteMatch
from sidecar.problem import SidecarError


class EventEmitter(Protocol):
    """Emit a security event (``token_issued``, ``signature_replay``, ...) to the audit log.

    Must never block: the audit log enqueues. ``fields`` must never hold a token, secret,
    key or body.
    """

    def __call__(self, event_type: str, fields: Mapping[str, Any]) -> None: ...


def discard_event(event_type: str, fields: Mapping[str, Any]) -> None:
    """The emitter used when no audit log is configured."""


class Lifecycle(Protocol):
    """Stages that own background tasks or connections."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class ReadinessCheck(Protocol):
    """A dependency ``/readyz`` reports: name -> ready."""

    def readiness(self) -> Mapping[str, bool]: ...


class Router(Protocol):
    """Step 2: match a request to a rule.

    Raises:
        NoRoute: no rule's path matches (404).
        MethodNotAllowed: a path matches but not the method; carries ``Allow`` (405).
    """

    def match(self, method: str, path: str) -> RouteMatch: ...


class Authenticator(Protocol):
    """Step 3: validate the bearer token and produce the caller's identity.

    ``authorization`` holds every ``Authorization`` header value received (more than one is
    an error). Raises 401/400/503 ``SidecarError``s with RFC 6750 challenges.
    """

    async def authenticate(
        self, authorization: Sequence[str], client_cert: ClientCert | None
    ) -> Identity: ...

    def is_cached(self, authorization: Sequence[str]) -> bool:
        """True when the token is in the verified-token cache (cheap, no crypto)."""
        ...

    def identity_headers(self, identity: Identity,
                         roles: frozenset[str] | None = None) -> Mapping[str, str]:
        """Trusted headers to set on the forwarded request, from verified claims only;
        ``roles`` are the effective roles when RBAC computed them."""
        ...


class Authorizer(Protocol):
    """Step 4: does the identity satisfy the matched rule's requirements?

    Raises:
        InsufficientScope: 403 with ``WWW-Authenticate: Bearer error="insufficient_scope"``.
        Forbidden: 403 for roles, claim bindings and mTLS requirements.
    """

    def authorize(
        self, identity: Identity, route: RouteMatch, client_cert: ClientCert | None
    ) -> frozenset[str]:
        """Returns the effective roles (forwarded as ``X-Auth-Roles`` when configured)."""
        ...


class RateLimiter(Protocol):
    """Step 5 (and the per-IP limit before authentication).

    Raise ``RateLimited`` (429, ``Retry-After``) or ``RateLimitUnavailable`` (503); return
    the most constraining bucket for the ``RateLimit-*`` headers, or None when no policy
    applies.
    """

    async def check_unauthenticated(self, ctx: RequestContext) -> RateLimitOutcome | None: ...

    def unauthenticated_exhausted(self, ctx: RequestContext) -> bool:
        """Cheap local view: is this IP's unauthenticated bucket known to be empty?"""
        ...

    async def check_authenticated(
        self, ctx: RequestContext, rule_policies: Sequence[str], *,
        headers: Mapping[str, str] | None = None,
    ) -> RateLimitOutcome | None:
        """``headers`` are the request's, for ``header:NAME`` policy keys."""
        ...

    def exhausted_error(self, ctx: RequestContext) -> SidecarError:
        """The 429 for an IP known to be exhausted, without asking the store."""
        ...


class SignatureVerifier(Protocol):
    """Step 6: verify the RFC 9421 signature and RFC 9530 digest; return the keyid.

    ``body`` is the complete request body (buffered up to ``max_body_bytes``).
    Raises 401 ``signature_*`` errors or 400 ``digest_mismatch``.
    """

    def required_for(self, route: RouteMatch) -> bool: ...

    async def verify(
        self, request: web.BaseRequest, ctx: RequestContext, body: bytes
    ) -> str: ...


class ResponseSigner(Protocol):
    """Optional: headers that sign a response (``Signature-Input``, ``Signature``, digest)."""

    def sign(
        self, request: web.BaseRequest, status: int, headers: Mapping[str, str], body: bytes
    ) -> Mapping[str, str]: ...


class AuditLog(Protocol):
    """Step 8: one event per request plus security events. ``record`` never blocks."""

    def record_request(self, ctx: RequestContext) -> None: ...

    def emit(self, event_type: str, fields: Mapping[str, Any]) -> None: ...


class LocalEndpoint(Protocol):
    """Paths the sidecar answers itself (token endpoint, JWKS): they need no rule."""

    paths: frozenset[str]

    async def handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse: ...
