"""Create RFC 9421 signatures over a message view; the sidecar's ``ResponseSigner``."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from sidecar.signatures import algorithms
from sidecar.signatures.base import (
    Message,
    ResponseView,
    build_signature_base,
    serialize_signature_params,
)
from sidecar.signatures.components import ComponentId
from sidecar.signatures.digest import content_digest
from sidecar.signatures.keys import ResponseKey
from sidecar.signatures.views import request_view

RESPONSE_LABEL = "sidecar"
_LABEL_RE = re.compile(r"^[a-z*][a-z0-9_.*-]*$")  # RFC 8941 §3.2 key


def create_signature(
    message: Message,
    components: Sequence[ComponentId],
    *,
    key: algorithms.SignKey,
    alg: str,
    keyid: str,
    created: int,
    label: str = "sig1",
    expires: int | None = None,
    nonce: str | None = None,
    tag: str | None = None,
    include_alg: bool = True,
) -> dict[str, str]:
    """Sign ``components`` of ``message``; return the ``Signature-Input`` and ``Signature``
    header values (label=member), with parameters in the order created, keyid, alg,
    expires, nonce, tag.

    Raises:
        SignatureBaseError: a component cannot be resolved in ``message``.
        KeyLoadError: ``key`` does not fit ``alg``.
        ValueError: the label or a parameter cannot be serialised.
    """
    if not _LABEL_RE.match(label):
        raise ValueError(f"invalid signature label {label!r}")
    params: list[tuple[str, int | str]] = [("created", created), ("keyid", keyid)]
    if include_alg:
        params.append(("alg", alg))
    if expires is not None:
        params.append(("expires", expires))
    if nonce is not None:
        params.append(("nonce", nonce))
    if tag is not None:
        params.append(("tag", tag))
    params_value = serialize_signature_params(components, params)
    base = build_signature_base(message, components, params_value)
    signature = algorithms.sign(alg, key, base)
    return {
        "Signature-Input": f"{label}={params_value}",
        "Signature": f"{label}=:{base64.b64encode(signature).decode('ascii')}:",
    }


_STATUS = ComponentId("@status")
_CONTENT_TYPE = ComponentId("content-type")
_CONTENT_DIGEST = ComponentId("content-digest")
_REQ_METHOD = ComponentId("@method", (("req", True),))
_REQ_TARGET = ComponentId("@target-uri", (("req", True),))


class ResponseSigner:
    """Sign responses with the sidecar's key (implements ``stages.ResponseSigner``).

    Covers ``@status``, ``content-type`` (when the response has one), ``content-digest``
    (computed here; omitted for HEAD, 204 and 304, which carry no content),
    ``"@method";req`` and ``"@target-uri";req``, under label ``sidecar`` with ``created``,
    ``keyid`` and ``alg``. The returned headers replace any of the same name.
    """

    def __init__(self, key: ResponseKey, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    def sign(self, request: web.BaseRequest, status: int, headers: Mapping[str, str],
             body: bytes) -> Mapping[str, str]:
        """Headers to add to the response; ``body`` is the complete response body."""
        return self.sign_view(ResponseView(
            status=status,
            headers=tuple((name.lower(), value) for name, value in headers.items()),
            request=request_view(request),
        ), body)

    def sign_view(self, response: ResponseView, body: bytes) -> dict[str, str]:
        """As :meth:`sign`, over a view (pure but for the clock)."""
        out: dict[str, str] = {}
        headers = [(n, v) for n, v in response.headers
                   if n not in ("content-digest", "signature", "signature-input")]
        components = [_STATUS]
        if any(name == "content-type" for name, _ in headers):
            components.append(_CONTENT_TYPE)
        method = response.request.method if response.request is not None else ""
        if method != "HEAD" and response.status not in (204, 304):
            out["Content-Digest"] = content_digest(body)
            headers.append(("content-digest", out["Content-Digest"]))
            components.append(_CONTENT_DIGEST)
        components += [_REQ_METHOD, _REQ_TARGET]
        view = ResponseView(response.status, tuple(headers), response.request)
        out.update(create_signature(
            view, components, key=self._key.key, alg=self._key.alg, keyid=self._key.keyid,
            created=int(self._clock()), label=RESPONSE_LABEL))
        return out
