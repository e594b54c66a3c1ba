"""Header filtering between client, sidecar and backend (pure).

Request side: hop-by-hop headers and those a ``Connection`` header nominates are dropped,
identity headers the backend trusts are stripped (by prefix and by name, with ``_`` and
``.`` read as ``-`` because many backends treat them alike), client-sent forwarding and
method-override headers are discarded; then the sidecar sets its own. The sidecar's own
headers are set after every removal, so a ``Connection`` header can never remove them.

Response side: hop-by-hop headers and backend fingerprints (``Server``, ``X-Powered-By``)
are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 §7.6.1 plus the legacy ones proxies still see.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
})
# SECURITY: a client can list any name in Connection; these frame or describe the body and
# removing them would desynchronise the backend (request smuggling), so they never go.
NEVER_NOMINATED = frozenset({"content-length", "content-type", "content-encoding", "host"})
CLIENT_FORWARDING = frozenset({
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
    "x-real-ip", "forwarded", "x-request-id",
})
METHOD_OVERRIDE = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
RESPONSE_FINGERPRINTS = frozenset({
    "server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-runtime",
})


_MEMO_MAX = 1024


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _nominated(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    names: set[str] = set()
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            token = token.strip().lower()
            if token and token not in NEVER_NOMINATED:
                names.add(token)
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class RequestHeaderPolicy:
    """Compiled from ``auth.forward``: what to strip from every incoming request."""

    strip_prefixes: tuple[str, ...]
    strip_names: frozenset[str]
    forward_authorization: bool
    _dropped: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    """Memo: header name as received -> removed? (names repeat across requests)."""

    @classmethod
    def build(cls, strip_prefixes: Iterable[str], identity_headers: Iterable[str],
              forward_authorization: bool) -> RequestHeaderPolicy:
        return cls(
            strip_prefixes=tuple(_canonical(p) for p in strip_prefixes),
            strip_names=frozenset(_canonical(h) for h in identity_headers),
            forward_authorization=forward_authorization,
        )

    def is_identity_header(self, name: str) -> bool:
        canonical = _canonical(name)
        return canonical in self.strip_names or canonical.startswith(self.strip_prefixes)

    def dropped(self, name: str) -> bool:
        """Is an incoming header of this name removed whatever its value (``Connection``
        nominations aside)?"""
        known = self._dropped.get(name)
        if known is not None:
            return known
        lower = name.lower()
        drop = (
            lower in HOP_BY_HOP
            or lower in CLIENT_FORWARDING
            or lower in METHOD_OVERRIDE
            or (lower == "authorization" and not self.forward_authorization)
            or self.is_identity_header(name)
        )
        if len(self._dropped) < _MEMO_MAX:  # names are client-chosen: bound the memo
            self._dropped[name] = drop
        return drop


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    policy: RequestHeaderPolicy,
    sidecar_set: Mapping[str, str],
) -> CIMultiDict[str]:
    """Headers to send to the backend.

    ``sidecar_set`` (identity, ``X-Forwarded-*``, ``X-Request-Id``) is applied last and
    replaces anything of the same name.
    """
    nominated = _nominated(incoming) if "Connection" in incoming else frozenset()
    out: CIMultiDict[str] = CIMultiDict()
    dropped = policy.dropped
    for name, value in incoming.items():
        if dropped(name) or (nominated and name.lower() in nominated):
            continue
        out.add(name, value)
    for name, value in sidecar_set.items():
        out[name] = value
    return out


def downstream_response_headers(
    upstream: CIMultiDictProxy[str],
    sidecar_set: CIMultiDict[str] | None = None,
    drop_length: bool = False,
) -> CIMultiDict[str]:
    """Headers of the backend's response that may reach the client, then ``sidecar_set``
    (replacing any backend header of the same name). ``drop_length`` also drops the
    backend's ``Content-Length``, for a body the sidecar writes (and measures) itself."""
    nominated = _nominated(upstream) if "Connection" in upstream else frozenset()
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        lower = name.lower()
        if (lower in HOP_BY_HOP or lower in nominated or lower in RESPONSE_FINGERPRINTS
                or (sidecar_set is not None and name in sidecar_set)
                or (drop_length and lower == "content-length")):
            continue
        out.add(name, value)
    if sidecar_set is not None:
        out.extend(sidecar_set)
    return out
