"""The signature base builder (RFC 9421 §2, §2.5), table-driven from the RFC's own examples."""

from __future__ import annotations

import pytest

from sidecar.signatures.base import (
    RequestView,
    ResponseView,
    SignatureBaseError,
    build_signature_base,
    component_values,
    normalize_authority,
    query_params,
    serialize_signature_params,
    target_uri,
)
from sidecar.signatures.components import ComponentId, parse_component_id

# RFC 9421 §2.1 example fragment (obs-fold written as CRLF + spaces, as on the wire).
FIELDS = RequestView(
    method="POST", scheme="https", authority="www.example.com", path="/path",
    query="param=value", headers=(
        ("host", "www.example.com"),
        ("date", "Tue, 20 Apr 2021 02:07:56 GMT"),
        ("x-ows-header", "   Leading and trailing whitespace.   "),
        ("x-obs-fold-header", "Obsolete\r\n    line folding."),
        ("cache-control", "max-age=60"),
        ("cache-control", "   must-revalidate"),
        ("example-dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
        ("x-empty-header", ""),
    ))


def value(message: RequestView | ResponseView, identifier: str) -> list[str]:
    return component_values(message, parse_component_id(identifier))


@pytest.mark.parametrize(("identifier", "expected"), [
    ("host", "www.example.com"),
    ("date", "Tue, 20 Apr 2021 02:07:56 GMT"),
    ("x-ows-header", "Leading and trailing whitespace."),
    ("x-obs-fold-header", "Obsolete line folding."),
    ("cache-control", "max-age=60, must-revalidate"),
    ("example-dict", "a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
    ("x-empty-header", ""),
    ('"example-dict";sf', "a=1, b=2;x=1;y=2, c=(a b c)"),
    ('"example-dict";key="a"', "1"),
    ('"example-dict";key="b"', "2;x=1;y=2"),
    ('"example-dict";key="c"', "(a b c)"),
])
def test_rfc9421_2_1_field_values(identifier: str, expected: str) -> None:
    assert value(FIELDS, identifier) == [expected]


def test_rfc9421_2_1_2_bare_dictionary_member_serialises_as_boolean() -> None:
    msg = RequestView("GET", "https", "h", "/", None, (("example-dict", "a=1, d"),))
    assert value(msg, '"example-dict";key="d"') == ["?1"]


def test_rfc9421_2_1_3_byte_sequence_wrapping_keeps_lines_apart() -> None:
    two = RequestView("GET", "https", "h", "/", None, (
        ("example-header", "value, with, lots"), ("example-header", "of, commas")))
    one = RequestView("GET", "https", "h", "/", None, (
        ("example-header", "value, with, lots, of, commas"),))
    assert value(two, "example-header") == value(one, "example-header")
    assert value(two, '"example-header";bs') == [":dmFsdWUsIHdpdGgsIGxvdHM=:, :b2YsIGNvbW1hcw==:"]
    assert value(one, '"example-header";bs') == [":dmFsdWUsIHdpdGgsIGxvdHMsIG9mLCBjb21tYXM=:"]


REQUEST = RequestView(
    method="POST", scheme="https", authority="www.example.com", path="/path",
    query="param=value&foo=bar&baz=bat%2Dman", headers=())


@pytest.mark.parametrize(("identifier", "expected"), [
    ("@method", "POST"),
    ("@target-uri", "https://www.example.com/path?param=value&foo=bar&baz=bat%2Dman"),
    ("@authority", "www.example.com"),
    ("@scheme", "https"),
    ("@request-target", "/path?param=value&foo=bar&baz=bat%2Dman"),
    ("@path", "/path"),
    ("@query", "?param=value&foo=bar&baz=bat%2Dman"),
    ('"@query-param";name="baz"', "bat-man"),
])
def test_rfc9421_2_2_derived_components(identifier: str, expected: str) -> None:
    assert value(REQUEST, identifier) == [expected]


def test_rfc9421_2_2_7_absent_query_is_a_lone_question_mark() -> None:
    msg = RequestView("GET", "http", "h", "/p", None, ())
    assert value(msg, "@query") == ["?"]
    assert value(msg, "@target-uri") == ["http://h/p"]


def test_rfc9421_2_2_6_empty_path_is_slash() -> None:
    msg = RequestView("GET", "http", "h", "", None, ())
    assert value(msg, "@path") == ["/"]


def test_rfc9421_2_2_8_query_params_are_decoded_then_form_encoded() -> None:
    msg = RequestView("GET", "https", "h", "/p",
                      "var=this%20is%20a%20big%0Amultiline%20value&bar=with+plus+whitespace"
                      "&fa%C3%A7ade%22%3A%20=something&qux=&baz=a&baz=b", ())
    assert value(msg, '"@query-param";name="var"') == ["this%20is%20a%20big%0Amultiline%20value"]
    assert value(msg, '"@query-param";name="bar"') == ["with%20plus%20whitespace"]
    assert value(msg, '"@query-param";name="fa%C3%A7ade%22%3A%20"') == ["something"]
    assert value(msg, '"@query-param";name="qux"') == [""]
    assert value(msg, '"@query-param";name="baz"') == ["a", "b"]


def test_repeated_query_param_gives_one_line_per_value() -> None:
    msg = RequestView("GET", "https", "h", "/p", "id=1&id=2", ())
    base = build_signature_base(msg, [parse_component_id('"@query-param";name="id"')], "()")
    assert base.decode().splitlines()[:2] == [
        '"@query-param";name="id": 1', '"@query-param";name="id": 2']


@pytest.mark.parametrize(("scheme", "authority", "expected"), [
    ("https", "Example.COM:443", "example.com"),
    ("http", "example.com:80", "example.com"),
    ("http", "example.com:8080", "example.com:8080"),
    ("https", "example.com:80", "example.com:80"),
    ("http", "[::1]:80", "[::1]"),
    ("http", "[::1]", "[::1]"),
])
def test_authority_is_normalised(scheme: str, authority: str, expected: str) -> None:
    assert normalize_authority(scheme, authority) == expected


def test_target_uri_keeps_percent_encoding_as_received() -> None:
    msg = RequestView("GET", "HTTPS", "H.example:443", "/a%2Fb", "q=%7e", ())
    assert target_uri(msg) == "https://h.example/a%2Fb?q=%7e"


def test_status_and_req_components_of_a_response() -> None:
    response = ResponseView(503, (("content-type", "application/json"),), REQUEST)
    assert value(response, "@status") == ["503"]
    assert value(response, '"@method";req') == ["POST"]
    assert value(response, '"@authority";req') == ["www.example.com"]


@pytest.mark.parametrize(("message", "identifier", "why"), [
    (REQUEST, "@status", "status of a request"),
    (REQUEST, '"@method";req', "req in a request"),
    (ResponseView(200, ()), "@method", "request component without req"),
    (ResponseView(200, ()), '"@method";req', "req without the related request"),
    (REQUEST, "date", "absent field"),
    (REQUEST, '"@query-param";name="nope"', "absent query parameter"),
    (FIELDS, '"example-dict";key="zz"', "absent dictionary member"),
    (FIELDS, '"cache-control";sf', "sf on a field of unknown type"),
    (FIELDS, '"date";key="a"', "key on a field that is not a dictionary"),
    (FIELDS, '"example-dict";bs;sf', "bs with sf"),
    (FIELDS, '"date";tr', "trailers"),
    (FIELDS, '"date";foo', "unknown parameter"),
    (FIELDS, '"@method";foo', "unknown parameter on a derived component"),
    (FIELDS, '"@signature-params"', "signature params listed as a component"),
])
def test_components_that_cannot_be_resolved_are_errors(message: RequestView | ResponseView,
                                                       identifier: str, why: str) -> None:
    with pytest.raises(SignatureBaseError):
        build_signature_base(message, [parse_component_id(identifier)], "()")


def test_repeated_component_identifier_is_an_error_regardless_of_param_order() -> None:
    components = [parse_component_id('"example-dict";key="a";sf'),
                  parse_component_id('"example-dict";sf;key="a"')]
    with pytest.raises(SignatureBaseError, match="repeated"):
        build_signature_base(FIELDS, components, "()")


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b"], ids=["LF", "CR", "NUL"])
def test_control_characters_in_values_are_refused(bad: str) -> None:
    msg = RequestView("GET", "http", "h", "/", None, (("x-a", bad),))
    with pytest.raises(SignatureBaseError):
        build_signature_base(msg, [ComponentId("x-a")], "()")


def test_non_ascii_base_is_refused() -> None:
    msg = RequestView("GET", "http", "h", "/", None, (("x-a", "caf\xe9"),))
    with pytest.raises(SignatureBaseError, match="US-ASCII"):
        build_signature_base(msg, [ComponentId("x-a")], "()")


def test_signature_params_line_is_last_and_has_no_trailing_newline() -> None:
    components = [ComponentId("@method"), ComponentId("@path")]
    params = serialize_signature_params(components, [("created", 1), ("keyid", "k")])
    assert params == '("@method" "@path");created=1;keyid="k"'
    base = build_signature_base(REQUEST, components, params)
    assert base == (b'"@method": POST\n"@path": /path\n'
                    b'"@signature-params": ("@method" "@path");created=1;keyid="k"')


def test_form_decoding_handles_malformed_percent_sequences() -> None:
    assert query_params("a=%zz&b=%4&&c") == [("a", "%zz"), ("b", "%4"), ("c", "")]


def test_request_view_from_url() -> None:
    view = RequestView.from_url("GET", "https://Example.com:8443/a/b?x=1#frag", [("Host", "h")])
    assert (view.scheme, view.authority, view.path, view.query) == (
        "https", "Example.com:8443", "/a/b", "x=1")
    assert view.headers == (("host", "h"),)
    assert RequestView.from_url("GET", "http://h/p?", []).query == ""
    assert RequestView.from_url("GET", "http://h/p", []).query is None
    for bad in ("/relative", "ftp://h/", "http://user:pw@h/"):
        with pytest.raises(ValueError):
            RequestView.from_url("GET", bad, [])


# --- fast paths: each answers exactly as the general path would ---------------------------


def test_obs_fold_with_a_bare_line_feed_is_unfolded_too() -> None:
    """Values without a line feed skip the obs-fold substitution; one with a bare LF is
    still unfolded."""
    msg = RequestView("GET", "https", "h", "/", None, (("x-a", "one\n   two"),
                                                        ("x-b", "one\r   two")))
    assert value(msg, "x-a") == ["one two"]
    with pytest.raises(SignatureBaseError, match="control character"):
        build_signature_base(msg, [ComponentId("x-b")], "()")


def test_a_tab_inside_a_value_is_field_content_but_del_is_not() -> None:
    """Printable values skip the control-character search; HTAB (not printable, but
    field-content) passes it, DEL does not."""
    tab = RequestView("GET", "http", "h", "/", None, (("x-a", "a\tb"),))
    assert build_signature_base(tab, [ComponentId("x-a")], "()") == (
        b'"x-a": a\tb\n"@signature-params": ()')
    delete = RequestView("GET", "http", "h", "/", None, (("x-a", "a\x7fb"),))
    with pytest.raises(SignatureBaseError, match="control character"):
        build_signature_base(delete, [ComponentId("x-a")], "()")


@pytest.mark.parametrize(("message", "identifier", "why"), [
    (REQUEST, "@query-param", "query-param without a name"),
    (REQUEST, "@nope", "unknown derived component without parameters"),
    (ResponseView(200, (), REQUEST), "@path", "request component of a response without req"),
    (RequestView(" POST", "https", "h", "/", None, ()), "@method", "method with a space"),
    (RequestView("POST", "https", "h", "/a\x00b", None, ()), "@path", "path with a NUL"),
    (RequestView("POST", "https", "h", "/a\u00a0", None, ()), "@path", "unprintable path"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_parameterless_components_are_refused_like_any_other(
        message: RequestView | ResponseView, identifier: str, why: str) -> None:
    with pytest.raises(SignatureBaseError):
        build_signature_base(message, [ComponentId(identifier)], "()")


def test_parameterless_and_parameterised_lookups_agree() -> None:
    """A response's ``"@method";req`` takes the general path; a request's ``@method`` the
    fast one: both read the same request."""
    response = ResponseView(200, (("x-a", "v"),), REQUEST)
    for name in ("@method", "@target-uri", "@authority", "@scheme", "@request-target",
                 "@path", "@query"):
        assert value(response, f'"{name}";req') == value(REQUEST, name)
    assert value(response, "x-a") == ["v"]


def test_signature_parameters_keep_true_and_one_apart() -> None:
    """Serialised parameters are cached by value and type: ``True == 1`` in Python."""
    for _ in range(2):
        assert serialize_signature_params([], [("x", True)]) == "();x"
        assert serialize_signature_params([], [("x", 1)]) == "();x=1"
        assert serialize_signature_params([], [("x", "1")]) == '();x="1"'


def test_identifiers_that_compare_equal_serialise_each_as_itself() -> None:
    """``ComponentId`` equality ignores bool/int (``True == 1``); the serialisation kept
    on each identifier does not."""
    flag = ComponentId("x-a", (("sf", True),))
    one = ComponentId("x-a", (("sf", 1),))
    assert flag == one
    assert (flag.serialize(), one.serialize()) == ('"x-a";sf', '"x-a";sf=1')
    assert (flag.serialize(), one.serialize()) == ('"x-a";sf', '"x-a";sf=1')
