"""JWKS lifecycle against a real loopback JWKS server: rotation, refetch limits, outages,
staleness, discovery, files and reload. Time-dependent cases move an injected clock."""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import time
from pathlib import Path

import pytest

from sidecar.authn import IssuerUnavailable, TokenInvalid
from tests.fixtures.tokens import (
    AuthRig,
    FakeClock,
    JWKSServer,
    MakeAuthenticator,
    MakeToken,
    SigningKeyPair,
    jwt_issuer_config,
    new_key_pair,
)


def bearer(token: str) -> list[str]:
    return [f"Bearer {token}"]


async def accepted(rig: AuthRig, token: str) -> bool:
    try:
        await rig.auth.authenticate(bearer(token), None)
    except TokenInvalid:
        return False
    return True


async def test_rotation_to_a_new_kid_is_accepted_after_one_refetch(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        make_token: MakeToken) -> None:
    clock = FakeClock()
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url,
                                                      jwks_min_refresh="30s")], clock=clock)
    assert jwks_server.jwks_requests == 1
    rotated = new_key_pair("RS256", "rsa-2")
    jwks_server.set_keys(rotated)
    token = make_token(key=rotated, now=clock())
    # Within jwks_min_refresh of the last fetch an unknown kid causes no fetch.
    assert not await accepted(rig, token)
    assert jwks_server.jwks_requests == 1
    clock.advance(30)
    assert await accepted(rig, token)
    assert jwks_server.jwks_requests == 2
    assert rig.refreshes("corp", "ok") == 2


async def test_concurrent_unknown_kids_share_one_fetch(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        ed25519_signing_key: SigningKeyPair, make_token: MakeToken) -> None:
    clock = FakeClock()
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url)], clock=clock)
    clock.advance(60)
    tokens = [make_token(key=ed25519_signing_key, headers={"kid": secrets.token_hex(8)},
                         now=clock()) for _ in range(50)]
    results = await asyncio.gather(*(accepted(rig, t) for t in tokens))
    assert not any(results)
    assert jwks_server.jwks_requests == 2


@pytest.mark.slow
async def test_a_thousand_random_kids_cause_at_most_one_fetch_per_min_refresh(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        ed25519_signing_key: SigningKeyPair, make_token: MakeToken) -> None:
    tokens = [make_token(key=ed25519_signing_key, headers={"kid": secrets.token_hex(8)})
              for _ in range(1000)]
    started = time.monotonic()
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url,
                                                      jwks_min_refresh="1s")])
    for batch in range(10):
        chunk = tokens[batch * 100:(batch + 1) * 100]
        assert not any(await asyncio.gather(*(accepted(rig, t) for t in chunk)))
        await asyncio.sleep(0.25)
    elapsed = time.monotonic() - started
    assert jwks_server.jwks_requests <= math.ceil(elapsed / 1.0) + 1
    assert jwks_server.jwks_requests >= 2  # the refetch did happen, just rate-limited


async def test_keys_outlive_an_issuer_outage_until_max_stale(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        make_token: MakeToken) -> None:
    clock = FakeClock()
    rig = await make_authenticator(
        [jwt_issuer_config(jwks_url=jwks_server.url, jwks_max_stale="24h")], clock=clock)
    assert rig.auth.readiness() == {"issuer:corp": True}
    await jwks_server.go_down()
    clock.advance(3600)
    await rig.auth.tick()  # the background refresh is due (max-age 300) and fails
    assert "jwks_refresh_failed" in rig.event_types()
    assert rig.events[-1][1] == {"issuer": "corp", "reason": "connection failed "
                                 "(ClientConnectorError)", "has_keys": True}
    assert rig.refreshes("corp", "error") == 1
    clock.advance(86400 - 3600 - 1)  # one second before max_stale
    assert await accepted(rig, make_token(now=clock()))
    assert rig.auth.readiness() == {"issuer:corp": True}
    clock.advance(2)
    assert rig.auth.readiness() == {"issuer:corp": False}
    with pytest.raises(IssuerUnavailable) as caught:
        await rig.auth.authenticate(bearer(make_token(now=clock())), None)
    assert caught.value.status == 503 and caught.value.code == "issuer_unavailable"
    await jwks_server.go_up()
    clock.advance(600)
    await rig.auth.tick()
    assert rig.auth.readiness() == {"issuer:corp": True}
    assert await accepted(rig, make_token(now=clock()))


async def test_an_issuer_down_at_startup_is_not_ready_then_recovers(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        make_token: MakeToken) -> None:
    await jwks_server.go_down()
    clock = FakeClock()
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url,
                                                      jwks_min_refresh="30s")], clock=clock)
    assert rig.auth.readiness() == {"issuer:corp": False}
    with pytest.raises(IssuerUnavailable):
        await rig.auth.authenticate(bearer(make_token(now=clock())), None)
    await jwks_server.go_up()
    # Still within jwks_min_refresh of the failed attempt: no new fetch, still 503.
    with pytest.raises(IssuerUnavailable):
        await rig.auth.authenticate(bearer(make_token(now=clock())), None)
    clock.advance(30)
    assert await accepted(rig, make_token(now=clock()))
    assert rig.auth.readiness() == {"issuer:corp": True}


async def test_http_errors_and_bad_documents_keep_the_last_good_keys(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        make_token: MakeToken) -> None:
    clock = FakeClock()
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url)], clock=clock)
    bad_answers = [(500, None), (200, b"not json"), (200, b'{"keys": "nope"}'),
                   (200, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'),
                   (200, b'{"keys": []}'), (200, b" " * (1024 * 1024 + 10))]
    for status, body in bad_answers:
        jwks_server.status, jwks_server.body_override = status, body
        clock.advance(3600)
        await rig.auth.tick()
        assert await accepted(rig, make_token(now=clock())), (status, body)
    reasons = [f["reason"] for t, f in rig.events if t == "jwks_refresh_failed"]
    assert reasons == ["HTTP 500", "the JWKS is not valid JSON",
                       "not a JWKS: expected an object with a 'keys' list",
                       "the JWKS has no usable key (key 0: symmetric or private key material "
                       "ignored)", "the JWKS has no usable key",
                       "response larger than 1048576 bytes"]


async def test_max_age_sets_the_background_refresh_clamped_to_min_refresh(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer) -> None:
    clock = FakeClock()
    jwks_server.cache_control = "public, max-age=5"
    await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url,
                                                jwks_min_refresh="60s")], clock=clock)
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url,
                                                      jwks_min_refresh="60s")], clock=clock)
    assert jwks_server.jwks_requests == 2  # one initial fetch per authenticator
    jwks_server.cache_control = "max-age=1000"
    clock.advance(59)  # max-age 5 is clamped up to jwks_min_refresh (60 s)
    await rig.auth.tick()
    assert jwks_server.jwks_requests == 2
    clock.advance(1)
    await rig.auth.tick()
    assert jwks_server.jwks_requests == 3
    clock.advance(899)  # refreshed in the background at 90 % of max-age, before expiry
    await rig.auth.tick()
    assert jwks_server.jwks_requests == 3
    clock.advance(2)
    await rig.auth.tick()
    assert jwks_server.jwks_requests == 4


async def test_a_key_removed_from_the_jwks_takes_its_cached_tokens_with_it(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        make_token: MakeToken, ec_signing_key: SigningKeyPair) -> None:
    clock = FakeClock()
    rig = await make_authenticator([jwt_issuer_config(jwks_url=jwks_server.url)], clock=clock)
    token = make_token(now=clock())
    assert await accepted(rig, token)
    assert rig.auth.is_cached(bearer(token))
    jwks_server.set_keys(ec_signing_key)
    clock.advance(300)
    await rig.auth.tick()
    assert not rig.auth.is_cached(bearer(token))
    assert not await accepted(rig, token)


async def test_oidc_discovery_finds_the_jwks(make_authenticator: MakeAuthenticator,
                                             jwks_server: JWKSServer,
                                             make_token: MakeToken) -> None:
    issuer = jwks_server.issuer_url
    rig = await make_authenticator([jwt_issuer_config(issuer=issuer)])
    assert rig.auth.readiness() == {"issuer:corp": True}
    assert await accepted(rig, make_token(iss=issuer))
    assert jwks_server.hits["/.well-known/openid-configuration"] == 1


async def test_a_discovery_document_naming_another_issuer_is_refused(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer) -> None:
    jwks_server.issuer = "https://evil.example/"
    rig = await make_authenticator([jwt_issuer_config(issuer=jwks_server.base_url + "/")])
    assert rig.auth.readiness() == {"issuer:corp": False}
    assert jwks_server.jwks_requests == 0
    assert rig.events[0][1]["reason"] == "discovery document names another issuer"


async def test_a_jwks_file_is_reloaded_when_it_changes(
        make_authenticator: MakeAuthenticator, tmp_path: Path, make_token: MakeToken,
        rsa_signing_key: SigningKeyPair, ec_signing_key: SigningKeyPair) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_signing_key.public_jwk]}))
    clock = FakeClock()
    rig = await make_authenticator([jwt_issuer_config(jwks_file=str(path))], clock=clock)
    old, new = make_token(now=clock()), make_token(key=ec_signing_key, now=clock())
    assert await accepted(rig, old)
    assert not await accepted(rig, new)
    path.write_text(json.dumps({"keys": [ec_signing_key.public_jwk]}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    clock.advance(1)
    await rig.auth.tick()
    assert await accepted(rig, new)
    assert not await accepted(rig, old)
    path.write_text("broken")
    clock.advance(1)
    await rig.auth.tick()
    assert await accepted(rig, make_token(key=ec_signing_key, now=clock()))
    assert rig.events[-1][1]["reason"] == "the JWKS is not valid JSON"


async def test_a_reloaded_authenticator_adopts_the_keys_without_refetching(
        make_authenticator: MakeAuthenticator, jwks_server: JWKSServer,
        make_token: MakeToken) -> None:
    issuers = [jwt_issuer_config(jwks_url=jwks_server.url)]
    first = await make_authenticator(issuers)
    token = make_token()
    assert await accepted(first, token)
    second = await make_authenticator(issuers, previous=first.auth)
    await first.auth.close()
    assert jwks_server.jwks_requests == 1
    assert second.auth.readiness() == {"issuer:corp": True}
    assert second.auth.is_cached(bearer(token))  # unchanged config: cache carried over
    assert await accepted(second, token)
    third = await make_authenticator(issuers, previous=second.auth,
                                     claims={"client_id": ["sub"]})
    assert not third.auth.is_cached(bearer(token))
    assert await accepted(third, token)
    assert jwks_server.jwks_requests == 1
