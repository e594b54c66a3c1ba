"""Registered-claim checks, the claims -> Identity mapping and identity headers (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.authn.claims import (
    IdentityHeaders,
    TimePolicy,
    build_identity,
    check_registered_claims,
)
from sidecar.authn.errors import TokenExpired, TokenInvalid
from sidecar.config.auth import ClaimsConfig, ForwardConfig
from sidecar.problem import SidecarError

NOW = 1_800_000_000.0
POLICY = TimePolicy("https://idp/", frozenset({"api"}), leeway=30, max_lifetime=3600)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": "https://idp/", "aud": "api", "iat": NOW, "exp": NOW + 300,
                            "client_id": "c1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize("overrides", [
    {}, {"exp": NOW - 29}, {"nbf": NOW + 29}, {"iat": NOW + 29, "exp": NOW + 600},
    {"exp": NOW + 3600}, {"aud": ["x", "api"]}, {"exp": int(NOW) + 60},
], ids=["valid", "expired-within-leeway", "nbf-within-leeway", "iat-within-leeway",
        "lifetime-exactly-max", "aud-list", "integer-exp"])
def test_valid_registered_claims_pass(overrides: dict[str, Any]) -> None:
    assert check_registered_claims(claims(**overrides), POLICY, NOW) > NOW - 30


@pytest.mark.parametrize(("overrides", "error"), [
    ({"exp": NOW - 31}, TokenExpired),
    ({"exp": None}, TokenInvalid),
    ({"exp": float("nan")}, TokenInvalid),
    ({"nbf": NOW + 31}, TokenInvalid),
    ({"iat": NOW + 31, "exp": NOW + 600}, TokenInvalid),
    ({"iat": None}, TokenInvalid),
    ({"exp": NOW + 3601}, TokenInvalid),
    ({"iss": "https://idp"}, TokenInvalid),
    ({"aud": "API"}, TokenInvalid),
    ({"aud": []}, TokenInvalid),
    ({"aud": {"api": 1}}, TokenInvalid),
    ({"nbf": "0"}, TokenInvalid),
], ids=["expired", "no-exp", "nan-exp", "nbf-future", "iat-future", "no-iat-with-max-lifetime",
        "lifetime-over-max", "iss-not-exact", "aud-case", "aud-empty", "aud-object", "nbf-string"])
def test_bad_registered_claims_fail(overrides: dict[str, Any],
                                    error: type[SidecarError]) -> None:
    with pytest.raises(error):
        check_registered_claims(claims(**overrides), POLICY, NOW)


def test_without_max_lifetime_iat_is_optional() -> None:
    policy = TimePolicy("https://idp/", frozenset({"api"}), 30, None)
    check_registered_claims(claims(iat=None, exp=NOW + 86400 * 30), policy, NOW)


MAPPING = ClaimsConfig(roles=("realm_access.roles", "roles"))


@pytest.mark.parametrize(("token_claims", "client_id", "scopes", "roles"), [
    ({"client_id": "c1", "scope": "a b  c"}, "c1", {"a", "b", "c"}, set()),
    ({"azp": "c2", "scp": ["a", "b"]}, "c2", {"a", "b"}, set()),
    ({"sub": "c3", "realm_access": {"roles": ["admin"]}}, "c3", set(), {"admin"}),
    ({"client_id": "", "sub": "c4", "roles": "x y"}, "c4", set(), {"x", "y"}),
    ({"client_id": 7, "azp": "c5"}, "c5", set(), set()),
], ids=["client_id-and-scope-string", "azp-and-scp-list", "sub-and-dotted-roles",
        "empty-client_id-falls-back", "non-string-client_id-falls-back"])
def test_claims_map_to_an_identity(token_claims: dict[str, Any], client_id: str,
                                   scopes: set[str], roles: set[str]) -> None:
    identity = build_identity(token_claims, MAPPING, "https://idp/", NOW + 60)
    assert identity.client_id == client_id
    assert (set(identity.scopes), set(identity.roles)) == (scopes, roles)


def test_identity_carries_subject_jti_and_binding() -> None:
    identity = build_identity({"client_id": "c", "sub": "s", "jti": "j-1",
                               "cnf": {"x5t#S256": "thumb"}}, MAPPING, "iss", NOW)
    assert (identity.subject, identity.token_id, identity.cnf_x5t_s256) == ("s", "j-1", "thumb")
    with pytest.raises(TypeError):
        identity.claims["client_id"] = "other"  # type: ignore[index]


@pytest.mark.parametrize("token_claims", [
    {}, {"client_id": "c", "scope": 5}, {"client_id": "c", "roles": [1]},
    {"client_id": "c", "cnf": "x"}, {"client_id": "c", "cnf": {"x5t#S256": 1}},
], ids=["no-client-id", "scope-number", "roles-not-strings", "cnf-not-object",
        "thumbprint-not-string"])
def test_unmappable_claims_are_invalid(token_claims: dict[str, Any]) -> None:
    with pytest.raises(TokenInvalid):
        build_identity(token_claims, MAPPING, "iss", NOW)


def test_an_unprintable_or_huge_jti_is_dropped() -> None:
    for jti in ("a\nb", "x" * 300, 12):
        assert build_identity({"client_id": "c", "jti": jti}, MAPPING, "i", NOW).token_id is None


def test_identity_headers_follow_the_forward_map() -> None:
    headers = IdentityHeaders(ForwardConfig(headers={
        "X-Auth-Client-Id": "client_id", "X-Auth-Scopes": "scopes", "X-Auth-Roles": "roles",
        "X-Auth-Subject": "sub", "X-Auth-Tenant": "claim:tenant.id", "X-Auth-Jti": "jti"}))
    identity = build_identity({"client_id": "c", "sub": "s", "scope": "b a", "roles": ["r"],
                               "tenant": {"id": 42}}, MAPPING, "iss", NOW)
    assert headers(identity) == {"X-Auth-Client-Id": "c", "X-Auth-Scopes": "a b",
                                 "X-Auth-Roles": "r", "X-Auth-Subject": "s",
                                 "X-Auth-Tenant": "42"}


@pytest.mark.parametrize("sub", ["a\r\nX-Evil: 1", "a\nb", "a\x00b", "a\x7fb", "caf\u00e9"])
def test_header_unsafe_claim_values_are_left_out(sub: str) -> None:
    headers = IdentityHeaders(ForwardConfig())
    identity = build_identity({"client_id": "c", "sub": sub}, MAPPING, "iss", NOW)
    assert headers(identity) == {"X-Auth-Client-Id": "c", "X-Auth-Scopes": ""}
