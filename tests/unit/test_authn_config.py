"""The `auth` and `token_endpoint` sections: every error with its YAML path."""

from __future__ import annotations

import pytest

import sidecar.authn  # noqa: F401  (registers the auth cross-checks)
from sidecar.config import ConfigError, parse_text
from sidecar.config.auth import BuiltinIssuerConfig, IntrospectionIssuerConfig, JWTIssuerConfig
from sidecar.secrets import hash_secret

HASH = hash_secret("s", n=2**10)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_text(text, env={})
    return [str(issue) for issue in caught.value.issues]


def test_the_three_issuer_kinds_are_told_apart_by_their_keys() -> None:
    loaded = parse_text("""
auth:
  issuers:
    - {name: corp, issuer: "https://idp/", audiences: [api], jwks_url: "https://idp/jwks"}
    - name: opaque
      introspection: {url: "https://idp/introspect", client_id: s, client_secret: x}
    - {name: local, builtin: true}
token_endpoint:
  issuer: https://me/
  audience: api
  signing_keys: [{kid: k, alg: EdDSA, private_key_file: k.pem}]
""", env={})
    assert loaded.config.auth is not None
    kinds = [type(i) for i in loaded.config.auth.issuers]
    assert kinds == [JWTIssuerConfig, IntrospectionIssuerConfig, BuiltinIssuerConfig]
    assert loaded.warnings == ()
    assert "x" not in repr(loaded.config.auth.issuers[1])  # the secret is masked


@pytest.mark.parametrize(("alg", "message"), [
    ("none", "'none' is never accepted"),
    ("NONE", "'none' is never accepted"),
    ("HS256", "HS256 is refused for a JWKS issuer"),
    ("rs256", "unsupported algorithm 'rs256' (names are case-sensitive)"),
    ("ES512", "unsupported algorithm 'ES512'"),
])
def test_algorithms_outside_the_closed_set_are_refused(alg: str, message: str) -> None:
    found = errors(f"""
auth:
  issuers:
    - {{name: corp, issuer: "https://idp/", audiences: [api], algorithms: [RS256, {alg}]}}
""")
    assert found == [f"auth.issuers[0].algorithms[1]: {message}" + found[0].split(message)[1]]
    assert found[0].endswith("(line 4)")


@pytest.mark.parametrize(("source", "ok"), [
    ("jwks_url: https://idp.example/jwks", True),
    ("jwks_url: http://127.0.0.1:8080/jwks", True),
    ("jwks_url: http://localhost/jwks", True),
    ("jwks_url: http://[::1]/jwks", True),
    ("jwks_url: http://idp.example/jwks", False),
    ("jwks_url: ftp://idp.example/jwks", False),
    ("jwks_url: https://user:pw@idp.example/jwks", False),
    ("jwks_file: jwks.json", True),
])
def test_jwks_urls_must_be_https_off_loopback(source: str, ok: bool) -> None:
    text = f"""
auth:
  issuers:
    - name: corp
      issuer: "https://idp/"
      audiences: [api]
      {source}
"""
    if ok:
        parse_text(text, env={})
    else:
        assert errors(text)[0].startswith("auth.issuers[0]: jwks_url must")


def test_discovery_needs_an_https_issuer_and_the_insecure_flag_warns() -> None:
    assert errors("""
auth:
  issuers: [{name: corp, issuer: "http://idp.example/", audiences: [api]}]
""")[0].startswith("auth.issuers[0]: issuer (used for OIDC discovery) must use https")
    loaded = parse_text("""
auth:
  issuers:
    - {name: corp, issuer: "http://idp.example/", audiences: [api],
       insecure_allow_http_jwks: true}
""", env={})
    assert [str(w) for w in loaded.warnings] == [
        "auth.issuers[0].insecure_allow_http_jwks: warning: JWKS may be fetched over plain "
        "http; keys can be forged in transit (line 5)"]


def test_issuer_entries_report_every_problem() -> None:
    found = errors("""
auth:
  issuers:
    - {name: "bad name", issuer: "https://idp/", audiences: []}
    - {name: b, issuer: "https://idp/", audiences: [a], jwks_url: "https://x/", jwks_file: f}
    - {name: c, introspection: {url: "https://x/", client_id: i}, extra: 1}
    - {name: d, builtin: false}
    - {name: e, issuer: "https://idp/", audiences: [a], leeway: 30}
""")
    assert found == [
        "auth.issuers[0].name: must be 1-64 characters of letters, digits, '.', '_' or '-' "
        "(line 4)",
        "auth.issuers[0].audiences: Tuple should have at least 1 item after validation, "
        "not 0 (line 4)",
        "auth.issuers[1]: set jwks_url or jwks_file, not both (line 5)",
        "auth.issuers[2].introspection.client_secret: Field required (line 6)",
        "auth.issuers[2].extra: unknown key (not part of the config schema) (line 6)",
        "auth.issuers[3].builtin: Input should be True (line 7)",
        "auth.issuers[4].leeway: must be a duration string such as 250ms, 30s, 5m or 1h "
        "(line 8)",
    ]


def test_issuer_names_and_iss_values_are_unique() -> None:
    assert errors("""
auth:
  issuers:
    - {name: a, issuer: "https://idp/", audiences: [x]}
    - {name: a, issuer: "https://idp/", audiences: [x]}
""") == ["auth.issuers: issuer names must be unique: a (line 3)"]


def test_a_builtin_issuer_needs_an_enabled_token_endpoint() -> None:
    assert errors("""
auth:
  issuers: [{name: local, builtin: true}]
""") == ["auth.issuers[0].builtin: a builtin issuer needs an enabled token_endpoint section "
         "(line 3)"]


def test_a_token_endpoint_without_a_builtin_issuer_is_a_warning() -> None:
    loaded = parse_text(f"""
token_endpoint:
  issuer: https://me/
  audience: api
  signing_keys: [{{kid: k, alg: EdDSA, private_key_file: k.pem}}]
  clients: [{{client_id: m, secret_hash: "{HASH}", scopes: [a]}}]
""", env={})
    assert [w.path for w in loaded.warnings] == ["token_endpoint"]


def test_token_endpoint_fields_are_validated() -> None:
    found = errors("""
token_endpoint:
  issuer: https://me/
  audience: api
  path: oauth/token
  ttl: 1s
  signing_keys:
    - {kid: k, alg: RS256, private_key_file: k.pem}
    - {kid: "../k", alg: EdDSA, private_key_file: k.pem}
  clients:
    - {client_id: m, secret_hash: "sha256$abc", scopes: ["a b"]}
    - {client_id: n, secret_hash: "scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA$%s"}
""" % ("A" * 43))
    assert [f.split(":")[0] for f in found] == [
        "token_endpoint.path", "token_endpoint.ttl", "token_endpoint.signing_keys[0].alg",
        "token_endpoint.signing_keys[1].kid", "token_endpoint.clients[0].secret_hash",
        "token_endpoint.clients[0].scopes", "token_endpoint.clients[1].secret_hash"]
    assert "N must be a power of two" in found[-1]
    assert found[1] == "token_endpoint.ttl: must be between 10s and 24h (line 6)"
    assert errors("""
token_endpoint: {issuer: "https://me/", audience: api}
""") == ["token_endpoint: signing_keys: at least one key is needed to sign tokens (line 2)"]


def test_forward_headers_name_known_identity_fields() -> None:
    found = errors("""
auth:
  forward:
    headers: {X-Auth-Client-Id: client_id, "Bad Header": sub, X-Auth-X: password}
""")
    assert len(found) == 1 and found[0].startswith("auth.forward.headers: 'Bad Header'")
    found = errors("""
auth:
  forward:
    headers: {X-Auth-X: password}
""")
    assert "unknown identity field 'password'" in found[0]
