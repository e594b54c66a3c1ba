"""The one exception root and its rendering as RFC 9457 problem+json.

Stages raise a :class:`SidecarError` subclass; ``pipeline.py`` renders it once. The client
sees a fixed, safe ``title`` and ``detail`` chosen by the error class, a stable ``code``
(the same word as the audit ``reason`` and the metric label) and the request id. The cause
(``log_detail``) goes to logs and audit only, never to the client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://payments-sidecar.dev/problems/"


class SidecarError(Exception):
    """Root of every error the sidecar answers to a client.

    Subclasses fix ``status``, ``code``, ``title`` and ``stage``; instances may carry
    response ``headers`` (``WWW-Authenticate``, ``Retry-After``, ``Allow``) and a
    ``log_detail`` for operators.
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"
    detail: ClassVar[str] = "The request could not be processed."
    stage: ClassVar[str] = "proxy"

    def __init__(self, log_detail: str = "", *, headers: Mapping[str, str] | None = None,
                 code: str | None = None) -> None:
        super().__init__(log_detail or self.code)
        self.log_detail = log_detail
        self.headers: dict[str, str] = dict(headers or {})
        if code is not None:
            # Some classes share a status and title but carry several stable codes.
            self.code = code  # type: ignore[misc]


def problem_body(error: SidecarError, request_id: str) -> bytes:
    """Render the RFC 9457 body; only fixed strings and the request id appear in it."""
    return json.dumps(
        {
            "type": PROBLEM_TYPE_BASE + error.code,
            "title": error.title,
            "status": error.status,
            "detail": error.detail,
            "code": error.code,
            "request_id": request_id,
        },
        separators=(",", ":"),
    ).encode()


# --- request-shape errors (stage "request") -------------------------------------------

class BadRequest(SidecarError):
    status, code, title, stage = 400, "bad_request", "Bad request", "request"
    detail = "The request is malformed."


class BadPath(BadRequest):
    code, title = "bad_path", "Ambiguous or unsafe path"
    detail = "The request path is ambiguous or contains forbidden characters."


class PayloadTooLarge(SidecarError):
    status, code, title, stage = 413, "payload_too_large", "Payload too large", "request"
    detail = "The request body exceeds the configured limit."


class URITooLong(SidecarError):
    status, code, title, stage = 414, "uri_too_long", "URI too long", "request"
    detail = "The request target exceeds the configured limit."


class HeadersTooLarge(SidecarError):
    status, code, stage = 431, "headers_too_large", "request"
    title = "Request header fields too large"
    detail = "The request headers exceed the configured limit."


class NoRoute(SidecarError):
    status, code, title, stage = 404, "no_route", "Not found", "route"
    detail = "No route matches this request."


class MethodNotAllowed(SidecarError):
    status, code, title, stage = 405, "method_not_allowed", "Method not allowed", "route"
    detail = "The method is not allowed on this route."


# --- upstream errors (stage "upstream") -----------------------------------------------

class UpstreamUnavailable(SidecarError):
    status, code, title, stage = 502, "upstream_unavailable", "Bad gateway", "upstream"
    detail = "The backend could not be reached."


class UpstreamTimeout(SidecarError):
    status, code, title, stage = 504, "upstream_timeout", "Gateway timeout", "upstream"
    detail = "The backend did not answer in time."


class ServiceUnavailable(SidecarError):
    status, code, title, stage = 503, "unavailable", "Service unavailable", "proxy"
    detail = "The service is temporarily unavailable."


class InternalError(SidecarError):
    """Any unexpected exception, rendered without a trace of what happened."""
