"""The client-side signing helper: coverage defaults, digests, parameters."""

from __future__ import annotations

import base64

import pytest
from yarl import URL

from sidecar.client import aiohttp_request_kwargs, sign_request
from sidecar.signatures.fields import parse_signatures

SECRET = base64.b64decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi"
                          "6pcl8jsasjlTMtDQ==")
URL_ = "https://api.example.com/v1/payments/p-1/refunds?x=1"


def covered(headers: dict[str, str]) -> list[str]:
    [(sig_input, _)] = parse_signatures([headers["Signature-Input"]], [headers["Signature"]])
    return [c.serialize() for c in sig_input.components]


def test_default_coverage_with_a_body() -> None:
    out = sign_request("POST", URL_, {"Content-Type": "application/json",
                                      "Authorization": "Bearer t"}, b"{}",
                       key=SECRET, keyid="k", created=100, nonce="n")
    assert covered(out) == ['"@method"', '"@target-uri"', '"content-digest"',
                            '"content-type"', '"authorization"']
    assert out["Content-Digest"] == "sha-256=:RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o=:"
    assert out["Signature-Input"].endswith(';created=100;keyid="k";alg="hmac-sha256";nonce="n"')


def test_default_coverage_leaves_out_what_the_request_does_not_have() -> None:
    out = sign_request("GET", URL_, {}, None, key=SECRET, keyid="k")
    assert "Content-Digest" not in out
    assert covered(out) == ['"@method"', '"@target-uri"']


def test_explicit_coverage_requires_the_headers() -> None:
    with pytest.raises(ValueError, match="covered header 'x-req' is not in the request"):
        sign_request("GET", URL_, {}, None, key=SECRET, keyid="k",
                     covered=["@method", "@target-uri", "x-req"])
    out = sign_request("GET", URL_, {"X-Req": "1"}, None, key=SECRET, keyid="k",
                       covered=["@method", "@authority", "@path", '"@query-param";name="x"',
                                "x-req", "content-digest"])
    assert covered(out) == ['"@method"', '"@authority"', '"@path"', '"@query-param";name="x"',
                            '"x-req"']


def test_nonce_and_expires_options() -> None:
    random = sign_request("GET", URL_, {}, None, key=SECRET, keyid="k", created=10)
    [(a, _)] = parse_signatures([random["Signature-Input"]], [random["Signature"]])
    assert isinstance(a.param("nonce"), str) and len(a.param("nonce")) >= 20
    none = sign_request("GET", URL_, {}, None, key=SECRET, keyid="k", created=10, nonce=False,
                        expires_in=60, tag="payments")
    assert none["Signature-Input"].endswith(
        ';created=10;keyid="k";alg="hmac-sha256";expires=70;tag="payments"')


def test_a_stale_content_digest_given_by_the_caller_is_replaced() -> None:
    out = sign_request("POST", URL_, {"Content-Digest": "sha-256=:AAAA:"}, b"x",
                       key=SECRET, keyid="k")
    assert out["Content-Digest"] != "sha-256=:AAAA:"


def test_aiohttp_adapter_sets_content_type_and_keeps_the_url_encoded() -> None:
    kwargs = aiohttp_request_kwargs("POST", "http://h:8080/a%2Fb?q=%7E", key=SECRET, keyid="k",
                                    data=b"raw")
    assert kwargs["headers"]["Content-Type"] == "application/octet-stream"
    assert kwargs["url"] == URL("http://h:8080/a%2Fb?q=%7E", encoded=True)
    assert str(kwargs["url"]) == "http://h:8080/a%2Fb?q=%7E"
    assert '"content-type"' in kwargs["headers"]["Signature-Input"]


@pytest.mark.parametrize("url", ["/relative", "ftp://h/x", "https://u:p@h/x"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        sign_request("GET", url, {}, None, key=SECRET, keyid="k")
