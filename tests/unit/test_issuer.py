"""The embedded client-credentials endpoint over real HTTP (aiohttp test server on loopback)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sidecar.authn import JWTAuthenticator, TokenInvalid
from sidecar.config.auth import AuthConfig, TokenEndpointConfig
from sidecar.config.loader import ConfigError
from sidecar.context import ClientCert, RequestContext
from sidecar.issuer import TokenIssuer, load_signing_keys
from sidecar.metrics import Metrics
from sidecar.secrets import hash_secret, parse_secret_hash

SECRET_A, SECRET_B = "s3cret-a", "s3cret-b+/:% é"
CHEAP_N = 2**10  # tests only: production hashes use 2**14


def write_key(directory: Path, kid: str, alg: str) -> str:
    private: Any = (ed25519.Ed25519PrivateKey.generate() if alg == "EdDSA"
                    else ec.generate_private_key(ec.SECP256R1()))
    path = directory / f"{kid}.pem"
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(path)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("issuer-keys")
    write_key(directory, "new", "EdDSA")
    write_key(directory, "old", "ES256")
    return directory


@pytest.fixture(scope="module")
def client_hashes() -> dict[str, str]:
    return {"a": hash_secret(SECRET_A, n=CHEAP_N), "b": hash_secret(SECRET_B, n=CHEAP_N)}


def endpoint_config(key_dir: Path, client_hashes: dict[str, str],
                    keys: tuple[tuple[str, str], ...] = (("new", "EdDSA"), ("old", "ES256")),
                    **overrides: Any) -> TokenEndpointConfig:
    data: dict[str, Any] = {
        "issuer": "https://payments.example.test/", "audience": "payments-api", "ttl": "10m",
        "signing_keys": [{"kid": kid, "alg": alg, "private_key_file": str(key_dir / f"{kid}.pem")}
                         for kid, alg in keys],
        "clients": [
            {"client_id": "merchant-a", "secret_hash": client_hashes["a"],
             "scopes": ["payments:read", "payments:write"]},
            {"client_id": "merchant-b", "secret_hash": client_hashes["b"],
             "scopes": ["payments:read"]},
        ],
    }
    data.update(overrides)
    return TokenEndpointConfig.model_validate(data)


class Rig:
    def __init__(self, issuer: TokenIssuer, client: TestClient[Any, Any], metrics: Metrics,
                 events: list[tuple[str, dict[str, Any]]], charged: list[RequestContext],
                 contexts: list[RequestContext]) -> None:
        self.issuer, self.client, self.metrics = issuer, client, metrics
        self.events, self.charged, self.contexts = events, charged, contexts

    async def token(self, data: dict[str, str] | str | None = None, *,
                    basic: tuple[str, str] | None = None,
                    headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any],
                                                                   dict[str, str]]:
        sent = dict(headers or {})
        if basic is not None:
            raw = f"{basic[0]}:{basic[1]}".encode()
            sent["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        if isinstance(data, str):
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        response = await self.client.post("/oauth/token", data=data, headers=sent)
        return response.status, await response.json(), dict(response.headers)


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(aiohttp_client: Any, key_dir: Path,
                   client_hashes: dict[str, str]) -> MakeRig:
    async def make(cert: ClientCert | None = None, **overrides: Any) -> Rig:
        metrics, events, charged, contexts = Metrics(), [], [], []

        async def charge(ctx: RequestContext) -> None:
            charged.append(ctx)

        issuer = TokenIssuer(endpoint_config(key_dir, client_hashes, **overrides), metrics,
                             lambda t, f: events.append((t, dict(f))), charge_failure=charge)

        async def handler(request: web.Request) -> web.StreamResponse:
            ctx = RequestContext(request_id="req-1", method=request.method, path=request.path,
                                 query=request.query_string, client_ip="127.0.0.1",
                                 peer_ip="127.0.0.1", scheme="http", host=request.host,
                                 started=time.time(), client_cert=cert)
            contexts.append(ctx)
            assert request.path in issuer.paths
            return await issuer.handle(request, ctx)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        client = await aiohttp_client(app)
        return Rig(issuer, client, metrics, events, charged, contexts)

    return make


@pytest.fixture
async def rig(make_rig: MakeRig) -> Rig:
    return await make_rig()


def decode(rig: Rig, token: str) -> dict[str, Any]:
    keys = jwt.PyJWKSet.from_dict(dict(rig.issuer.jwks_document()))
    kid = jwt.get_unverified_header(token)["kid"]
    key = keys[kid]
    return jwt.decode(token, key, algorithms=[key.algorithm_name], audience="payments-api",
                      issuer="https://payments.example.test/")


# --- success --------------------------------------------------------------------------------

async def test_client_secret_basic_gets_a_signed_token(rig: Rig) -> None:
    status, body, headers = await rig.token({"grant_type": "client_credentials"},
                                            basic=("merchant-a", SECRET_A))
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert body["scope"] == "payments:read payments:write"
    assert headers["Cache-Control"] == "no-store" and headers["Pragma"] == "no-cache"
    assert headers["Content-Type"].startswith("application/json")
    header = jwt.get_unverified_header(body["access_token"])
    assert header == {"alg": "EdDSA", "kid": "new", "typ": "at+jwt"}
    claims = decode(rig, body["access_token"])
    assert claims["sub"] == claims["client_id"] == "merchant-a"
    assert claims["exp"] - claims["iat"] == 600 and claims["jti"]
    assert "cnf" not in claims


async def test_client_secret_post_gets_a_token(rig: Rig) -> None:
    status, body, _ = await rig.token({"grant_type": "client_credentials",
                                       "client_id": "merchant-b", "client_secret": SECRET_B})
    assert status == 200
    assert decode(rig, body["access_token"])["scope"] == "payments:read"


async def test_basic_credentials_are_form_urlencoded_per_rfc6749(rig: Rig) -> None:
    encoded = urllib.parse.quote_plus(SECRET_B)
    status, _, _ = await rig.token({"grant_type": "client_credentials"},
                                   basic=("merchant-b", encoded))
    assert status == 200


@pytest.mark.parametrize(("requested", "granted"), [
    ("payments:read", "payments:read"),
    ("payments:write payments:read", "payments:write payments:read"),
    ("payments:read payments:read", "payments:read"),
])
async def test_a_requested_subset_of_scopes_is_granted(rig: Rig, requested: str,
                                                       granted: str) -> None:
    status, body, _ = await rig.token({"grant_type": "client_credentials", "scope": requested},
                                      basic=("merchant-a", SECRET_A))
    assert status == 200 and body["scope"] == granted
    assert decode(rig, body["access_token"])["scope"] == granted


async def test_issuance_is_counted_and_emitted_without_the_token(rig: Rig) -> None:
    _, body, _ = await rig.token({"grant_type": "client_credentials"},
                                 basic=("merchant-a", SECRET_A))
    assert rig.metrics.registry.get_sample_value(
        "sidecar_tokens_issued_total", {"client_id": "merchant-a"}) == 1
    (event_type, fields), = rig.events
    assert event_type == "token_issued"
    assert set(fields) == {"client_id", "jti", "scope", "exp", "bound"}
    assert body["access_token"] not in str(fields)
    assert rig.contexts[-1].identity is not None
    assert rig.contexts[-1].identity.client_id == "merchant-a"


async def test_more_tokens_than_excessive_issuance_per_ttl_is_a_security_event(
        make_rig: MakeRig) -> None:
    rig = await make_rig(excessive_issuance=2)
    for _ in range(3):
        status, _, _ = await rig.token({"grant_type": "client_credentials"},
                                       basic=("merchant-a", SECRET_A))
        assert status == 200  # still issued
    types = [t for t, _ in rig.events]
    assert types.count("token_issued") == 3
    assert types.count("token_excessive_issuance") == 1
    assert types[-1] == "token_excessive_issuance"
    assert rig.events[-1][1] == {"client_id": "merchant-a", "threshold": 2,
                                 "window_seconds": 600.0}
    assert rig.metrics.registry.get_sample_value(
        "sidecar_token_excessive_issuance_total", {"client_id": "merchant-a"}) == 1
    await rig.token({"grant_type": "client_credentials", "client_id": "merchant-b",
                     "client_secret": SECRET_B})
    assert [t for t, _ in rig.events].count("token_excessive_issuance") == 1


async def test_a_token_requested_over_mtls_is_bound_to_the_certificate(
        make_rig: MakeRig) -> None:
    thumb = base64.urlsafe_b64encode(hashlib.sha256(b"cert").digest()).rstrip(b"=").decode()
    rig = await make_rig(cert=ClientCert("CN=merchant-a", (), thumb))
    _, body, _ = await rig.token({"grant_type": "client_credentials"},
                                 basic=("merchant-a", SECRET_A))
    assert decode(rig, body["access_token"])["cnf"] == {"x5t#S256": thumb}


# --- errors (RFC 6749 §5.2) ------------------------------------------------------------------

def assert_oauth_error(status: int, body: dict[str, Any], headers: dict[str, str],
                       expected_status: int, error: str) -> None:
    assert (status, body["error"]) == (expected_status, error)
    assert set(body) == {"error", "error_description"}
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("basic", "form"), [
    (("merchant-a", "wrong"), {}),
    (("merchant-a", ""), {}),
    (("nobody", SECRET_A), {}),
    (("merchant-b", SECRET_A), {}),
    (None, {"client_id": "merchant-a", "client_secret": "wrong"}),
    (None, {"client_id": "merchant-a"}),
    (None, {}),
    (None, {"client_secret": SECRET_A}),
], ids=["wrong-secret", "empty-secret", "unknown-client", "other-clients-secret",
        "wrong-post-secret", "post-without-secret", "no-credentials", "secret-without-id"])
async def test_failed_client_authentication_is_invalid_client_and_charged(
        rig: Rig, basic: tuple[str, str] | None, form: dict[str, str]) -> None:
    status, body, headers = await rig.token({"grant_type": "client_credentials", **form},
                                            basic=basic)
    assert_oauth_error(status, body, headers, 401, "invalid_client")
    assert headers["WWW-Authenticate"] == 'Basic realm="sidecar"'
    assert len(rig.charged) == 1 and rig.charged[0].reason == "invalid_client"
    assert rig.events == []


@pytest.mark.parametrize("authorization", [
    "Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
])
async def test_malformed_authorization_is_invalid_client(rig: Rig, authorization: str) -> None:
    status, body, headers = await rig.token({"grant_type": "client_credentials"},
                                            headers={"Authorization": authorization})
    assert_oauth_error(status, body, headers, 401, "invalid_client")


async def test_both_client_authentication_methods_at_once_is_invalid_request(rig: Rig) -> None:
    status, body, headers = await rig.token(
        {"grant_type": "client_credentials", "client_id": "merchant-a",
         "client_secret": SECRET_A}, basic=("merchant-a", SECRET_A))
    assert_oauth_error(status, body, headers, 400, "invalid_request")
    assert rig.charged == []


@pytest.mark.parametrize(("form", "error"), [
    ("", "invalid_request"),
    ("scope=payments%3Aread", "invalid_request"),
    ("grant_type=client_credentials&grant_type=client_credentials", "invalid_request"),
    ("grant_type=client_credentials&scope=a&scope=b", "invalid_request"),
    ("grant_type=client_credentials&%ZZ=1", "invalid_request"),
    ("grant_type=client_credentials&x=%FF", "invalid_request"),
    ("grant_type=password&username=a&password=b", "unsupported_grant_type"),
    ("grant_type=authorization_code&code=x", "unsupported_grant_type"),
    ("grant_type=client_credentials&scope=payments%3Aadmin", "invalid_scope"),
    ("grant_type=client_credentials&scope=payments%3Aread%20payments%3Aadmin", "invalid_scope"),
    ("grant_type=client_credentials&scope=%20payments%3Aread", "invalid_scope"),
    ("grant_type=client_credentials&scope=a%22b", "invalid_scope"),
], ids=repr)
async def test_malformed_requests_get_their_rfc6749_error(rig: Rig, form: str,
                                                          error: str) -> None:
    status, body, headers = await rig.token(form, basic=("merchant-a", SECRET_A))
    assert_oauth_error(status, body, headers, 400, error)


async def test_a_scope_beyond_the_clients_is_refused_for_that_client(rig: Rig) -> None:
    status, body, _ = await rig.token({"grant_type": "client_credentials",
                                       "scope": "payments:write"},
                                      basic=("merchant-b", urllib.parse.quote_plus(SECRET_B)))
    assert (status, body["error"]) == (400, "invalid_scope")


async def test_a_json_body_is_invalid_request(rig: Rig) -> None:
    response = await rig.client.post("/oauth/token", json={"grant_type": "client_credentials"},
                                     auth=None)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"


async def test_an_oversized_form_is_invalid_request(rig: Rig) -> None:
    form = "grant_type=client_credentials&pad=" + "x" * 20000
    status, body, _ = await rig.token(form, basic=("merchant-a", SECRET_A))
    assert (status, body["error"]) == (400, "invalid_request")


async def test_two_authorization_headers_are_invalid_request(rig: Rig) -> None:
    basic = "Basic " + base64.b64encode(f"merchant-a:{SECRET_A}".encode()).decode()
    response = await rig.client.post(
        "/oauth/token", data="grant_type=client_credentials",
        headers=[("Content-Type", "application/x-www-form-urlencoded"),
                 ("Authorization", basic), ("Authorization", basic)])
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"


async def test_get_on_the_token_path_is_405_problem_json(rig: Rig) -> None:
    response = await rig.client.get("/oauth/token")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["code"] == "method_not_allowed" and body["request_id"] == "req-1"


async def test_an_overloaded_endpoint_answers_temporarily_unavailable(
        make_rig: MakeRig) -> None:
    rig = await make_rig()
    rig.issuer._max_waiting = 0
    status, body, headers = await rig.token({"grant_type": "client_credentials"},
                                            basic=("merchant-a", SECRET_A))
    assert (status, body["error"]) == (503, "temporarily_unavailable")
    assert headers["Retry-After"] == "1"


async def test_secret_checks_run_off_the_event_loop(make_rig: MakeRig) -> None:
    rig = await make_rig()
    costly = hash_secret("slow", n=2**15)
    rig.issuer._clients["merchant-a"] = (parse_secret_hash(costly), ("payments:read",))
    lags: list[float] = []

    async def ticker() -> None:
        for _ in range(20):
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    results = await asyncio.gather(
        ticker(), *(rig.token({"grant_type": "client_credentials"}, basic=("merchant-a", "slow"))
                    for _ in range(3)))
    assert all(status == 200 for status, _, _ in results[1:])
    assert max(lags) < 0.25, lags


# --- JWKS and the builtin issuer ------------------------------------------------------------

async def test_the_jwks_publishes_every_configured_key(rig: Rig) -> None:
    response = await rig.client.get("/.well-known/jwks.json")
    assert response.status == 200
    keys = (await response.json())["keys"]
    assert [(k["kid"], k["alg"], k["use"], k["kty"]) for k in keys] == [
        ("new", "EdDSA", "sig", "OKP"), ("old", "ES256", "sig", "EC")]
    assert all("d" not in k for k in keys)
    assert (await rig.client.post("/.well-known/jwks.json")).status == 405


def builtin_authenticator(issuer: TokenIssuer) -> JWTAuthenticator:
    config = AuthConfig.model_validate({"issuers": [{"name": "local", "builtin": True}]})
    return JWTAuthenticator(config, Metrics(), lambda t, f: None,
                            builtin_keys=issuer.builtin_public_keys())


async def test_issued_tokens_are_accepted_by_a_builtin_issuer(rig: Rig) -> None:
    _, body, _ = await rig.token({"grant_type": "client_credentials", "scope": "payments:read"},
                                 basic=("merchant-a", SECRET_A))
    auth = builtin_authenticator(rig.issuer)
    await auth.start()
    try:
        assert auth.readiness() == {"issuer:local": True}
        identity = await auth.authenticate([f"Bearer {body['access_token']}"], None)
        assert identity.client_id == "merchant-a"
        assert identity.scopes == {"payments:read"}
        assert identity.issuer == "https://payments.example.test/"
    finally:
        await auth.close()


async def test_a_token_of_the_old_key_is_accepted_while_the_key_is_published(
        make_rig: MakeRig) -> None:
    before = await make_rig(keys=(("old", "ES256"),))
    _, body, _ = await before.token({"grant_type": "client_credentials"},
                                    basic=("merchant-a", SECRET_A))
    assert jwt.get_unverified_header(body["access_token"])["kid"] == "old"
    rotated = await make_rig()  # new key first (signing), old still published
    retired = await make_rig(keys=(("new", "EdDSA"),))
    for issuer, accepted in ((rotated.issuer, True), (retired.issuer, False)):
        auth = builtin_authenticator(issuer)
        await auth.start()
        try:
            if accepted:
                await auth.authenticate([f"Bearer {body['access_token']}"], None)
            else:
                with pytest.raises(TokenInvalid):
                    await auth.authenticate([f"Bearer {body['access_token']}"], None)
        finally:
            await auth.close()


def test_unusable_signing_key_files_are_config_errors(tmp_path: Path,
                                                      client_hashes: dict[str, str]) -> None:
    write_key(tmp_path, "ed", "EdDSA")
    (tmp_path / "junk.pem").write_text("not a key")
    config = endpoint_config(tmp_path, client_hashes,
                             keys=(("ed", "ES256"), ("junk", "EdDSA"), ("missing", "EdDSA")))
    with pytest.raises(ConfigError) as caught:
        load_signing_keys(config)
    assert [str(i) for i in caught.value.issues] == [
        "token_endpoint.signing_keys[0].private_key_file: alg ES256 needs a P-256 EC private key",
        "token_endpoint.signing_keys[1].private_key_file: not an unencrypted PEM private key",
        f"token_endpoint.signing_keys[2].private_key_file: cannot read {tmp_path}/missing.pem: "
        "No such file or directory",
    ]
