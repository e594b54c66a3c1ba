"""Bearer extraction and strict JWS splitting (pure)."""

from __future__ import annotations

import pytest

from sidecar.authn.bearer import (
    MAX_TOKEN_BYTES,
    b64url_decode,
    bearer_token,
    looks_like_jws,
    split_jws,
)
from sidecar.authn.errors import DuplicateAuthorization, TokenInvalid, TokenMissing
from sidecar.problem import SidecarError


@pytest.mark.parametrize(("headers", "token"), [
    (["Bearer abc.def.ghi"], "abc.def.ghi"),
    (["bearer abc"], "abc"),
    (["BEARER abc"], "abc"),
    (["Bearer  abc  "], "abc"),
    (["Bearer a-b_c~d+e/f=="], "a-b_c~d+e/f=="),
], ids=["plain", "lowercase-scheme", "uppercase-scheme", "extra-spaces", "b64token-alphabet"])
def test_the_token_of_a_single_bearer_header_is_extracted(headers: list[str], token: str
                                                          ) -> None:
    assert bearer_token(headers) == token


@pytest.mark.parametrize(("headers", "error"), [
    ([], TokenMissing),
    (["Basic dXNlcjpwYXNz"], TokenMissing),
    (["Bearer"], TokenMissing),
    (["Bearer "], TokenMissing),
    (["Bearerabc"], TokenMissing),
    (["Bearer a b"], TokenInvalid),
    (["Bearer a,b"], TokenInvalid),
    (["Bearer a\r\nb"], TokenInvalid),
    (["Bearer a=b"], TokenInvalid),
    (["Bearer " + "a" * (MAX_TOKEN_BYTES + 1)], TokenInvalid),
    (["Bearer a", "Bearer a"], DuplicateAuthorization),
    (["Bearer a", "Basic b"], DuplicateAuthorization),
], ids=["none", "basic", "scheme-only", "scheme-and-space", "no-separator", "space-inside",
        "comma-folded", "crlf", "equals-inside", "over-8-KiB", "duplicate", "mixed-duplicate"])
def test_bad_authorization_values_are_refused(headers: list[str],
                                              error: type[SidecarError]) -> None:
    with pytest.raises(error):
        bearer_token(headers)


def test_a_token_of_exactly_8_kib_is_accepted_by_extraction() -> None:
    assert len(bearer_token(["Bearer " + "a" * MAX_TOKEN_BYTES])) == MAX_TOKEN_BYTES


@pytest.mark.parametrize(("token", "jws"), [("a.b.c", True), ("abc", False),
                                            ("a.b.c.d.e", False), ("a.b", False)])
def test_only_two_dot_tokens_look_like_a_jws(token: str, jws: bool) -> None:
    assert looks_like_jws(token) is jws


@pytest.mark.parametrize("segment", ["a", "ab=", "a+b", "a/b", "YQ==", "YR", "!!"])
def test_non_canonical_or_padded_base64url_is_refused(segment: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(segment)


def test_canonical_base64url_decodes() -> None:
    assert b64url_decode("YQ") == b"a"
    assert b64url_decode("") == b""
    assert b64url_decode("_-8") == b"\xff\xef"


def test_split_jws_returns_the_signed_bytes_and_decoded_parts() -> None:
    jws = split_jws("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln")
    assert jws.header == {"alg": "RS256"}
    assert jws.claims == {"iss": "x"}
    assert jws.signing_input == b"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0"
    assert jws.signature == b"sig"


@pytest.mark.parametrize("token", ["e30.e30.", ".e30.c2ln", "e30..c2ln", "W10.e30.c2ln",
                                   "e30.MQ.c2ln", "bm90IGpzb24.e30.c2ln", "e30.e30.c2ln.x"])
def test_split_jws_refuses_malformed_tokens(token: str) -> None:
    with pytest.raises(TokenInvalid):
        split_jws(token)
