"""Header filtering: hop-by-hop, Connection abuse, identity spoofing, fingerprints."""

from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.headers import (
    RequestHeaderPolicy,
    downstream_response_headers,
    upstream_request_headers,
)

POLICY = RequestHeaderPolicy.build(["X-Auth-"], ["X-Auth-Client-Id", "X-Tenant"], False)


def _filter(
    pairs: list[tuple[str, str]], sidecar: dict[str, str] | None = None
) -> CIMultiDict[str]:
    return upstream_request_headers(CIMultiDictProxy(CIMultiDict(pairs)), POLICY, sidecar or {})


def test_hop_by_hop_headers_are_dropped() -> None:
    out = _filter([("Connection", "keep-alive"), ("Keep-Alive", "5"), ("TE", "trailers"),
                   ("Upgrade", "h2c"), ("Proxy-Authorization", "x"), ("Accept", "*/*")])
    assert list(out.keys()) == ["Accept"]


def test_connection_nominated_headers_are_dropped_but_never_framing_or_sidecar_headers() -> None:
    out = _filter(
        [("Connection", "X-Custom, Content-Length, X-Request-Id, X-Forwarded-For, Host"),
         ("X-Custom", "1"), ("Content-Length", "3"), ("Host", "api")],
        {"X-Request-Id": "rid", "X-Forwarded-For": "1.2.3.4"},
    )
    assert "X-Custom" not in out
    assert out["Content-Length"] == "3"
    assert out["Host"] == "api"
    assert out["X-Request-Id"] == "rid"
    assert out["X-Forwarded-For"] == "1.2.3.4"


def test_spoofed_identity_headers_are_stripped_in_every_spelling() -> None:
    out = _filter([("X-Auth-Client-Id", "evil"), ("x-auth-scopes", "admin"),
                   ("X_Auth_Roles", "admin"), ("X.Auth.Subject", "root"), ("X-Tenant", "t"),
                   ("X-Authority", "kept")])
    assert list(out.keys()) == ["X-Authority"]


def test_client_forwarding_and_method_override_headers_are_discarded() -> None:
    out = _filter([("X-Forwarded-For", "1.1.1.1"), ("X-Real-IP", "1.1.1.1"),
                   ("Forwarded", "for=1.1.1.1"), ("X-Forwarded-Host", "evil"),
                   ("X-HTTP-Method-Override", "DELETE"), ("X-HTTP-Method", "PUT"),
                   ("X-Method-Override", "PATCH"), ("X-Request-Id", "spoof")])
    assert len(out) == 0


def test_authorization_is_stripped_unless_configured_to_forward() -> None:
    assert "Authorization" not in _filter([("Authorization", "Bearer t")])
    forwarding = RequestHeaderPolicy.build([], [], True)
    out = upstream_request_headers(
        CIMultiDictProxy(CIMultiDict([("Authorization", "Bearer t")])), forwarding, {})
    assert out["Authorization"] == "Bearer t"


def test_sidecar_headers_replace_client_values() -> None:
    out = _filter([("X-Auth-Client-Id", "evil")], {"X-Auth-Client-Id": "merchant-a"})
    assert out.getall("X-Auth-Client-Id") == ["merchant-a"]


def test_backend_fingerprints_and_hop_by_hop_response_headers_are_hidden() -> None:
    upstream = CIMultiDictProxy(CIMultiDict([
        ("Server", "nginx/1.2"), ("X-Powered-By", "PHP"), ("Connection", "close, X-Debug"),
        ("X-Debug", "stack"), ("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain"),
    ]))
    assert list(downstream_response_headers(upstream).keys()) == ["Content-Type"]


def test_sidecar_response_headers_replace_the_backends_and_length_can_be_dropped() -> None:
    upstream = CIMultiDictProxy(CIMultiDict([
        ("x-request-id", "backend-id"), ("RateLimit-Remaining", "999"),
        ("Content-Length", "12"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ]))
    ours = CIMultiDict({"X-Request-Id": "ours", "RateLimit-Remaining": "3"})
    out = downstream_response_headers(upstream, ours, drop_length=True)
    assert out.getall("X-Request-Id") == ["ours"]
    assert out.getall("RateLimit-Remaining") == ["3"]
    assert "Content-Length" not in out
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    kept = downstream_response_headers(upstream, ours)
    assert kept.getall("Content-Length") == ["12"]
