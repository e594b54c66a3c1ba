"""Parsing ``Signature-Input`` / ``Signature`` / ``Content-Digest`` with http_sf, strictly."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.signatures.components import ComponentId, parse_component_id
from sidecar.signatures.digest import DigestError, content_digest, verify_content_digest
from sidecar.signatures.fields import MAX_SIGNATURES, MalformedField, parse_signatures

SIG = "sig1=:AAAA:"
INPUT = 'sig1=("@method" "@target-uri");created=1;keyid="k"'


def test_a_well_formed_pair() -> None:
    [(sig_input, signature)] = parse_signatures([INPUT], [SIG])
    assert sig_input.label == "sig1"
    assert sig_input.components == (ComponentId("@method"), ComponentId("@target-uri"))
    assert (sig_input.param("created"), sig_input.keyid) == (1, "k")
    assert signature == b"\x00\x00\x00"
    assert sig_input.signature_params() == '("@method" "@target-uri");created=1;keyid="k"'


def test_signature_params_are_reserialised_strictly() -> None:
    [(sig_input, _)] = parse_signatures(['sig1=(  "@method"   "@path" );created=1 ;keyid="k"'
                                         .replace(" ;", ";")], [SIG])
    assert sig_input.signature_params() == '("@method" "@path");created=1;keyid="k"'


@pytest.mark.parametrize(("inputs", "signatures", "why"), [
    ([INPUT, INPUT], [SIG], "same label on two lines"),
    ([INPUT + ", " + INPUT], [SIG], "same label twice on one line"),
    ([INPUT], [SIG, SIG], "duplicate label in Signature"),
    (['sig1=("@method");created=1;keyid="k"'], ["sig2=:AAAA:"], "no matching signature"),
    (["sig1=:AAAA:"], [SIG], "input member is not an inner list"),
    ([INPUT], ['sig1="AAAA"'], "signature member is not a byte sequence"),
    ([INPUT], ["sig1=:A A:"], "malformed byte sequence"),
    (['sig1=(@method);created=1'], [SIG], "unquoted component"),
    (['sig1=(method);created=1'], [SIG], "token component"),
    (['sig1=("@Method");created=1'], [SIG], "uppercase component"),
    (['sig1=("@method");created="1"'], [SIG], "created as string"),
    (['sig1=("@method");created=1.5'], [SIG], "created as decimal"),
    (['sig1=("@method");keyid=k'], [SIG], "keyid as token"),
    (['sig1=("@method");alg=?1'], [SIG], "alg as boolean"),
    (['sig1=("@method");colour="blue"'], [SIG], "unknown signature parameter"),
    (['sig1=("@method"'], [SIG], "unterminated inner list"),
    (["SIG1=()"], [SIG], "uppercase label"),
    ([""], [SIG], "empty input"),
    (['sig1=("caf\xe9")'], [SIG], "non-ascii"),
    ([", ".join(f'l{i}=("@method");keyid="k"' for i in range(MAX_SIGNATURES + 1))],
     [", ".join(f"l{i}=:AAAA:" for i in range(MAX_SIGNATURES + 1))], "too many signatures"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_fields_are_refused(inputs: list[str], signatures: list[str],
                                      why: str) -> None:
    with pytest.raises(MalformedField):
        parse_signatures(inputs, signatures)


def test_extra_signature_members_without_input_are_ignored() -> None:
    assert len(parse_signatures([INPUT], [SIG + ", other=:AAAA:"])) == 1


def test_duplicate_parameters_cannot_differ_between_check_and_base() -> None:
    """RFC 8941 keeps the last duplicate parameter; whatever was parsed is what is signed."""
    [(sig_input, _)] = parse_signatures(['sig1=("@method");created=1;created=2;keyid="k"'],
                                        [SIG])
    assert sig_input.param("created") == 2
    assert sig_input.signature_params() == '("@method");created=2;keyid="k"'


@given(st.text(max_size=200))
def test_arbitrary_text_never_escapes_as_another_exception(text: str) -> None:
    with contextlib.suppress(MalformedField):
        parse_signatures([text], [text])


@pytest.mark.parametrize(("text", "component"), [
    ("@method", ComponentId("@method")),
    ("content-type", ComponentId("content-type")),
    ('"@query-param";name="id"', ComponentId("@query-param", (("name", "id"),))),
    ('"example-dict";key="a";sf', ComponentId("example-dict", (("key", "a"), ("sf", True)))),
])
def test_component_identifiers_round_trip(text: str, component: ComponentId) -> None:
    assert parse_component_id(text) == component
    assert parse_component_id(component.serialize()) == component


BODY = b'{"hello": "world"}'
SHA512 = ("sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwE"
          "mTHWXvJwew==:")


def test_content_digest_generation_and_rfc9530_example_value() -> None:
    assert content_digest(BODY) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    assert content_digest(BODY, "sha-512") == SHA512
    assert verify_content_digest([SHA512], BODY) == "sha-512"


def test_several_digests_must_all_match() -> None:
    both = f"{content_digest(BODY)}, {SHA512}"
    assert verify_content_digest([both], BODY) == "sha-256,sha-512"
    wrong_second = f"{content_digest(BODY)}, {content_digest(b'x', 'sha-512')}"
    with pytest.raises(DigestError, match="sha-512 does not match"):
        verify_content_digest([wrong_second], BODY)


@pytest.mark.parametrize(("lines", "message"), [
    (["md5=:XrY7u+Ae7tCTyyK7j1rNww==:"], "no supported algorithm"),
    (["sha-256=:AAAA:"], "does not match"),
    ([content_digest(b"other")], "does not match"),
    (["sha-256=abc"], "not a Byte Sequence"),
    (["sha-256"], "not a Byte Sequence"),
    (["sha-256=:A:"], "malformed"),
    ([content_digest(BODY), content_digest(BODY)], "malformed"),
    (["not a dictionary"], "malformed"),
], ids=["only unsupported", "short digest", "other body", "token value", "boolean value",
        "bad base64", "algorithm twice", "garbage"])
def test_bad_digests(lines: list[str], message: str) -> None:
    with pytest.raises(DigestError, match=message):
        verify_content_digest(lines, BODY)


def test_unsupported_algorithms_beside_a_supported_one_are_ignored() -> None:
    md5 = "md5=:XrY7u+Ae7tCTyyK7j1rNww==:"
    assert verify_content_digest([f"{md5}, {content_digest(BODY)}"], BODY) == "sha-256"


def test_empty_body_digest() -> None:
    empty = content_digest(b"")
    assert empty == f"sha-256=:{base64.b64encode(hashlib.sha256(b'').digest()).decode()}:"
    assert verify_content_digest([empty], b"") == "sha-256"


# --- parsed identifiers are interned: equal-comparing items must not share an entry ---------


def test_a_token_is_refused_even_after_the_equal_string_was_accepted() -> None:
    """``Token("content-type") == "content-type"`` in Python; the interned identifiers are
    keyed by type too, so the token form stays malformed."""
    [(accepted, _)] = parse_signatures(['sig1=("content-type");created=1'], [SIG])
    assert accepted.components == (ComponentId("content-type"),)
    with pytest.raises(MalformedField, match="Structured Field Strings"):
        parse_signatures(["sig1=(content-type);created=1"], [SIG])


def test_a_flag_and_the_integer_one_stay_different_parameters() -> None:
    [(flag, _)] = parse_signatures(['sig1=("x-a";sf);created=1'], [SIG])
    [(one, _)] = parse_signatures(['sig1=("x-a";sf=1);created=1'], [SIG])
    assert flag.components[0].param("sf") is True
    assert type(one.components[0].param("sf")) is int
    assert one.signature_params() == '("x-a";sf=1);created=1'
    assert flag.signature_params() == '("x-a";sf);created=1'


def test_the_same_identifier_parses_to_the_same_component() -> None:
    first = parse_signatures([INPUT], [SIG])[0][0].components
    second = parse_signatures([INPUT.replace("created=1", "created=2")], [SIG])[0][0].components
    assert all(a is b for a, b in zip(first, second, strict=True))


def test_a_duplicate_component_parameter_keeps_the_last_value() -> None:
    [(sig_input, _)] = parse_signatures(['sig1=("@query-param";name="a";name="b")'], [SIG])
    assert sig_input.components == (ComponentId("@query-param", (("name", "b"),)),)


def test_a_duplicate_digest_algorithm_on_one_line_is_malformed() -> None:
    one_line = f"{content_digest(BODY)}, {content_digest(BODY)}"
    with pytest.raises(DigestError, match="malformed"):
        verify_content_digest([one_line], BODY)
