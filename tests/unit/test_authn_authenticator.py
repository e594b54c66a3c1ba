"""JWTAuthenticator behaviour beyond the attack corpus: cache, introspection, routing."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from sidecar.authn import IssuerUnavailable, JWTAuthenticator, TokenExpired, TokenInvalid
from sidecar.config.auth import AuthConfig
from sidecar.metrics import Metrics
from tests.fixtures.tokens import (
    FakeClock,
    JWKSServer,
    MakeAuthenticator,
    MakeToken,
    jwt_issuer_config,
)

SECRET = "intro:secret+/"


def bearer(token: str) -> list[str]:
    return [f"Bearer {token}"]


class IntrospectionServer:
    """RFC 7662 endpoint on loopback: answers from ``responses`` by token."""

    def __init__(self) -> None:
        self.responses: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.status = 200
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        expected = base64.b64encode(
            f"sidecar:{urllib.parse.quote_plus(SECRET)}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        token = str(form["token"])
        self.calls.append(token)
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response(self.responses.get(token, {"active": False}))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/introspect", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/introspect"


@pytest.fixture
async def introspection() -> AsyncIterator[IntrospectionServer]:
    server = IntrospectionServer()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def introspection_issuer(server: IntrospectionServer, **extra: Any) -> dict[str, Any]:
    return {"name": "opaque", "introspection": {"url": server.url, "client_id": "sidecar",
                                               "client_secret": SECRET, "cache_ttl": "60s"},
            **extra}


async def test_an_active_opaque_token_is_introspected_once_then_cached(
        make_authenticator: MakeAuthenticator, introspection: IntrospectionServer) -> None:
    clock = FakeClock()
    introspection.responses["opaque-1"] = {
        "active": True, "client_id": "m", "scope": "a b", "exp": clock() + 3600,
        "iss": "https://idp/"}
    rig = await make_authenticator([introspection_issuer(introspection)], clock=clock)
    assert not rig.auth.is_cached(bearer("opaque-1"))
    identity = await rig.auth.authenticate(bearer("opaque-1"), None)
    assert (identity.client_id, identity.issuer) == ("m", "https://idp/")
    assert identity.scopes == frozenset({"a", "b"})
    assert rig.auth.is_cached(bearer("opaque-1"))
    await rig.auth.authenticate(bearer("opaque-1"), None)
    assert introspection.calls == ["opaque-1"]
    clock.advance(60)  # cache_ttl over: asked again
    await rig.auth.authenticate(bearer("opaque-1"), None)
    assert len(introspection.calls) == 2


async def test_active_results_are_cached_no_longer_than_exp(
        make_authenticator: MakeAuthenticator, introspection: IntrospectionServer) -> None:
    clock = FakeClock()
    introspection.responses["t"] = {"active": True, "client_id": "m", "exp": clock() + 10}
    rig = await make_authenticator([introspection_issuer(introspection)], clock=clock)
    await rig.auth.authenticate(bearer("t"), None)
    clock.advance(10)
    assert not rig.auth.is_cached(bearer("t"))
    with pytest.raises(TokenExpired):
        await rig.auth.authenticate(bearer("t"), None)


async def test_inactive_results_are_cached_for_at_most_five_seconds(
        make_authenticator: MakeAuthenticator, introspection: IntrospectionServer) -> None:
    clock = FakeClock()
    rig = await make_authenticator([introspection_issuer(introspection)], clock=clock)
    for _ in range(2):
        with pytest.raises(TokenInvalid):
            await rig.auth.authenticate(bearer("revoked"), None)
    assert introspection.calls == ["revoked"]
    assert not rig.auth.is_cached(bearer("revoked"))
    clock.advance(5)
    with pytest.raises(TokenInvalid):
        await rig.auth.authenticate(bearer("revoked"), None)
    assert len(introspection.calls) == 2


@pytest.mark.parametrize("response", [{"active": "true", "client_id": "m"}, {"active": 1},
                                      {}, {"client_id": "m"}])
async def test_anything_but_active_true_is_inactive(
        make_authenticator: MakeAuthenticator, introspection: IntrospectionServer,
        response: dict[str, Any]) -> None:
    introspection.responses["t"] = response
    rig = await make_authenticator([introspection_issuer(introspection)])
    with pytest.raises(TokenInvalid):
        await rig.auth.authenticate(bearer("t"), None)


async def test_an_introspection_outage_is_issuer_unavailable(
        make_authenticator: MakeAuthenticator, introspection: IntrospectionServer) -> None:
    introspection.status = 500
    rig = await make_authenticator([introspection_issuer(introspection)])
    with pytest.raises(IssuerUnavailable):
        await rig.auth.authenticate(bearer("t"), None)


async def test_introspection_audiences_are_enforced(
        make_authenticator: MakeAuthenticator, introspection: IntrospectionServer) -> None:
    introspection.responses["t"] = {"active": True, "client_id": "m", "aud": "other"}
    rig = await make_authenticator([introspection_issuer(introspection, audiences=["api"])])
    with pytest.raises(TokenInvalid):
        await rig.auth.authenticate(bearer("t"), None)


async def test_jws_tokens_go_to_their_issuer_and_opaque_ones_to_introspection(
        make_authenticator: MakeAuthenticator, introspection: IntrospectionServer,
        jwks_server: JWKSServer, make_token: MakeToken) -> None:
    introspection.responses["opaque"] = {"active": True, "client_id": "m"}
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url),
                                    introspection_issuer(introspection)])
    await rig.auth.authenticate(bearer(make_token()), None)
    await rig.auth.authenticate(bearer("opaque"), None)
    with pytest.raises(TokenInvalid) as caught:
        await rig.auth.authenticate(bearer(make_token(iss="https://unknown/")), None)
    assert caught.value.log_detail == "unknown issuer"
    assert introspection.calls == ["opaque"]
    assert jwks_server.jwks_requests == 1


async def test_with_only_introspection_configured_jws_shaped_tokens_are_introspected(
        make_authenticator: MakeAuthenticator, introspection: IntrospectionServer,
        make_token: MakeToken) -> None:
    token = make_token()
    introspection.responses[token] = {"active": True, "client_id": "m"}
    rig = await make_authenticator([introspection_issuer(introspection)])
    assert (await rig.auth.authenticate(bearer(token), None)).client_id == "m"


async def test_an_opaque_token_without_introspection_is_invalid(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer) -> None:
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url)])
    with pytest.raises(TokenInvalid):
        await rig.auth.authenticate(bearer("opaque"), None)


async def test_a_cached_token_does_not_outlive_its_exp(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        make_token: MakeToken) -> None:
    clock = FakeClock()
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url, leeway="0s")],
                                   clock=clock)
    token = make_token(now=clock(), exp=int(clock()) + 60)
    await rig.auth.authenticate(bearer(token), None)
    assert rig.auth.is_cached(bearer(token))
    clock.advance(61)
    assert not rig.auth.is_cached(bearer(token))
    with pytest.raises(TokenExpired):
        await rig.auth.authenticate(bearer(token), None)


@pytest.mark.parametrize("authorization", [[], ["Basic x"], ["Bearer a", "Bearer a"],
                                           ["Bearer " + "a" * 9000]])
async def test_is_cached_is_false_for_anything_unusable(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        authorization: list[str]) -> None:
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url)])
    assert rig.auth.is_cached(authorization) is False


async def test_identity_headers_come_from_the_verified_identity(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        make_token: MakeToken) -> None:
    rig = await make_authenticator(
        [jwt_issuer_config(jwks_url=jwks_server.url)],
        forward={"headers": {"X-Auth-Client-Id": "client_id", "X-Auth-Roles": "roles",
                             "X-Auth-Scopes": "scopes"}})
    identity = await rig.auth.authenticate(bearer(make_token(roles=["b", "a"])), None)
    assert rig.auth.identity_headers(identity) == {
        "X-Auth-Client-Id": "merchant-a", "X-Auth-Roles": "a b",
        "X-Auth-Scopes": "payments:read payments:write"}


def test_a_builtin_issuer_without_keys_is_a_construction_error() -> None:
    config = AuthConfig.model_validate({"issuers": [{"name": "local", "builtin": True}]})
    with pytest.raises(ValueError, match="builtin_public_keys"):
        JWTAuthenticator(config, Metrics(), lambda t, f: None)
