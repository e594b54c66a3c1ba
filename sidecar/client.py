"""Sign outgoing requests the way the sidecar verifies them (RFC 9421 + RFC 9530).

For clients written in Python::

    from sidecar.client import load_signing_key, sign_request

    key, alg = load_signing_key("keys/merchant-a.pem")          # PEM, or a base64 HMAC file
    extra = sign_request("POST", "https://api.example.com/v1/payments/p-1/refunds",
                         {"Content-Type": "application/json", "Authorization": f"Bearer {tok}"},
                         body, key=key, keyid="merchant-a-2026", alg=alg)
    headers.update(extra)   # Content-Digest (with a body), Signature-Input, Signature

Send the body bytes exactly as signed, to exactly the URL signed (already percent-encoded),
with the headers signed; send the request within ``max_age`` (default 5m) and only once
(each signature carries a fresh nonce).

Coverage: with the default ``covered`` (``@method @target-uri content-digest content-type
authorization``, the sidecar's default minimum) components that do not apply are left out:
``content-digest`` without a body, header fields the request does not carry. With an
explicit ``covered`` list a missing header is an error (``content-digest`` still follows
the body).

Adapters: :func:`aiohttp_request_kwargs` for ``aiohttp.ClientSession.request`` and, when
``httpx`` is installed, :class:`HTTPSignatureAuth` for ``httpx``.
"""

from __future__ import annotations

import importlib.util
import secrets
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from yarl import URL

from sidecar.config.signatures import DEFAULT_COVERED
from sidecar.signatures.algorithms import SignKey, infer_alg, load_signing_key
from sidecar.signatures.base import RequestView
from sidecar.signatures.components import ComponentId, parse_component_id
from sidecar.signatures.digest import content_digest
from sidecar.signatures.signer import create_signature

__all__ = [
    "DEFAULT_COVERED",
    "aiohttp_request_kwargs",
    "load_signing_key",
    "sign_request",
]


def _covered_components(covered: Sequence[str] | None, headers: Mapping[str, str],
                        has_body: bool) -> list[ComponentId]:
    explicit = covered is not None
    present = {name.lower() for name in headers}
    components: list[ComponentId] = []
    for entry in (covered if covered is not None else DEFAULT_COVERED):
        component = parse_component_id(entry)
        if component.name == "content-digest" and not component.params:
            if has_body:
                components.append(component)
            continue
        if not component.is_derived and component.name not in present:
            if explicit:
                raise ValueError(f"covered header {component.name!r} is not in the request")
            continue
        components.append(component)
    return components


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    body: bytes | None,
    *,
    key: SignKey,
    keyid: str,
    alg: str | None = None,
    covered: Sequence[str] | None = None,
    nonce: bool | str = True,
    created: int | None = None,
    expires_in: int | None = None,
    label: str = "sig1",
    tag: str | None = None,
    digest_algorithm: str = "sha-256",
) -> dict[str, str]:
    """Headers to add to a request so that the sidecar accepts its signature.

    Args:
        method: the request method, as sent (uppercase).
        url: the absolute, percent-encoded URL the request is sent to.
        headers: the headers the request will carry (names in any case).
        body: the exact body bytes, or None / b"" for none.
        key: a private key (``cryptography``) or the HMAC secret bytes.
        keyid: the ``keyid`` the sidecar knows the key by.
        alg: the key's algorithm; inferred from the key type when omitted.
        covered: component identifiers to cover (default: see the module docstring).
        nonce: True for a random nonce, a string to use that one, False for none.
        created: signature creation time (default: now).
        expires_in: adds ``expires = created + expires_in``.

    Returns:
        ``Content-Digest`` (when there is a body), ``Signature-Input`` and ``Signature``.

    Raises:
        ValueError: bad URL, a covered header missing, or a key that does not fit ``alg``.
    """
    alg = alg or infer_alg(key)
    headers = dict(headers or {})
    has_body = bool(body)
    out: dict[str, str] = {}
    lines = [(name, value) for name, value in headers.items()
             if name.lower() not in ("content-digest", "signature", "signature-input")]
    if has_body:
        assert body is not None
        out["Content-Digest"] = content_digest(body, digest_algorithm)
        lines.append(("Content-Digest", out["Content-Digest"]))
    components = _covered_components(covered, dict(lines), has_body)
    view = RequestView.from_url(method, url, lines)
    created = int(time.time()) if created is None else created
    nonce_value = secrets.token_urlsafe(18) if nonce is True else (nonce or None)
    out.update(create_signature(
        view, components, key=key, alg=alg, keyid=keyid, created=created, label=label,
        expires=created + expires_in if expires_in is not None else None,
        nonce=nonce_value, tag=tag))
    return out


def aiohttp_request_kwargs(method: str, url: str, *, key: SignKey, keyid: str,
                           alg: str | None = None, headers: Mapping[str, str] | None = None,
                           data: bytes | None = None, **sign_options: Any) -> dict[str, Any]:
    """Keyword arguments for ``aiohttp.ClientSession.request`` with a signed request::

        async with session.request(**aiohttp_request_kwargs(
                "POST", url, key=key, keyid="kid", headers=h, data=body)) as resp: ...

    The URL is passed as ``yarl.URL(url, encoded=True)`` so aiohttp sends it byte for byte as
    signed; with a body and no ``Content-Type``, ``application/octet-stream`` (what aiohttp
    would add) is set before signing.
    """
    all_headers = dict(headers or {})
    if data and not any(name.lower() == "content-type" for name in all_headers):
        all_headers["Content-Type"] = "application/octet-stream"
    all_headers.update(sign_request(method, url, all_headers, data, key=key, keyid=keyid,
                                    alg=alg, **sign_options))
    return {"method": method, "url": URL(url, encoded=True), "headers": all_headers,
            "data": data}


if importlib.util.find_spec("httpx") is not None:  # pragma: no cover - optional dependency
    import httpx  # type: ignore[import-not-found, unused-ignore]

    class HTTPSignatureAuth(httpx.Auth):  # type: ignore[misc, unused-ignore]
        """``httpx`` auth that signs each request: ``httpx.Client(auth=HTTPSignatureAuth(
        key, "kid"))``. Set ``Content-Type`` yourself when covering it."""

        requires_request_body = True

        def __init__(self, key: SignKey, keyid: str, alg: str | None = None,
                     **sign_options: Any) -> None:
            self._key, self._keyid, self._alg = key, keyid, alg
            self._options = sign_options

        def auth_flow(self, request: Any) -> Generator[Any, Any, None]:
            extra = sign_request(request.method, str(request.url), dict(request.headers),
                                 request.content, key=self._key, keyid=self._keyid,
                                 alg=self._alg, **self._options)
            request.headers.update(extra)
            yield request

    __all__ += ["HTTPSignatureAuth"]
