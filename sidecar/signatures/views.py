"""Adapter: an aiohttp request as a :class:`RequestView` for the signature base.

``@target-uri`` / ``@authority`` / ``@scheme`` come from ``request.scheme`` and
``request.host`` (the ``Host`` header) and the raw request target (``request.raw_path``,
never re-encoded). That is the target URI the client used when the sidecar is reached
directly; behind a proxy that rewrites ``Host`` or terminates TLS, the client signs a URI
the sidecar does not see, unless the proxy keeps ``Host`` and the app clones the request
with the forwarded scheme.
"""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from sidecar.signatures.base import RequestView


def request_view(request: web.BaseRequest) -> RequestView:
    """The signature view of a received request: raw target, header lines in wire order."""
    raw_target = request.raw_path
    request_target: str | None = None
    if not raw_target.startswith("/"):
        # absolute-form (or '*'): keep it for @request-target, read path/query from it.
        request_target = raw_target
        url = URL(raw_target, encoded=True)
        raw_target = url.raw_path_qs if url.absolute else "/"
    path, sep, query = raw_target.partition("?")
    headers = tuple([
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in request.raw_headers
    ])
    return RequestView(
        method=request.method,
        scheme=request.scheme,
        authority=request.host,
        path=path,
        query=query if sep else None,
        headers=headers,
        request_target=request_target,
    )
