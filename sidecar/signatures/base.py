"""The RFC 9421 signature base: message views and the pure builder (§2, §2.5).

A message is seen through a small immutable view: method, scheme, authority, raw path and
query, header lines in wire order (lowercased names, values as received), the status of a
response and the request it answers (for ``;req``). The builder never reads a live request
object, so the signer, the verifier and the tests all build bases from the same function.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import http_sf
from http_sf.bare_item import ser_bare_item
from http_sf.innerlist import ser_item_or_inner_list
from http_sf.util import ser_key

from sidecar.signatures.components import (
    DERIVED_REQUEST_COMPONENTS,
    SIGNATURE_PARAMS,
    ComponentId,
)

Header = tuple[str, str]

_OBS_FOLD = re.compile(r"[ \t]*\r?\n[ \t]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB: not field-content
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_FORM_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*-._")

# Structured fields whose type is known (RFC 9421 §2.1.1 needs the type for ``;sf``), as
# http_sf top-level types.
STRUCTURED_FIELD_TYPES: dict[str, str] = {
    "accept-signature": "dictionary", "cache-status": "list", "cdn-cache-control": "dictionary",
    "client-cert": "item", "client-cert-chain": "list", "content-digest": "dictionary",
    "example-dict": "dictionary", "priority": "dictionary", "proxy-status": "list",
    "repr-digest": "dictionary", "signature": "dictionary", "signature-input": "dictionary",
    "want-content-digest": "dictionary", "want-repr-digest": "dictionary",
}


class SignatureBaseError(ValueError):
    """The signature base cannot be built (RFC 9421 §2.5: such errors fail the algorithm)."""


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the signature base may read from a request."""

    method: str
    scheme: str
    authority: str
    """``host[:port]`` as received (``Host`` / ``:authority``); normalised when used."""
    path: str
    """Raw path, percent-encoding as received."""
    query: str | None
    """Raw query without ``?``; None when the target has no ``?``."""
    headers: tuple[Header, ...]
    """(lowercased name, value) per field line, in wire order."""
    request_target: str | None = None
    """The request-line target when it is not origin-form (absolute-form, ``*``)."""

    @classmethod
    def from_url(cls, method: str, url: str, headers: Iterable[tuple[str, str]]) -> RequestView:
        """A view of an outgoing request to an absolute, already percent-encoded URL.

        Raises:
            ValueError: the URL is not absolute http(s), or carries credentials.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("the URL must be absolute http:// or https://")
        if "@" in parts.netloc:
            raise ValueError("the URL must not carry credentials")
        query = parts.query if "?" in url.split("#", 1)[0] else None
        return cls(method=method, scheme=parts.scheme, authority=parts.netloc,
                   path=parts.path, query=query, headers=normalize_headers(headers))


@dataclass(frozen=True, slots=True)
class ResponseView:
    """What the signature base may read from a response."""

    status: int
    headers: tuple[Header, ...]
    request: RequestView | None = None
    """The request this response answers, for ``;req`` components (RFC 9421 §2.4)."""


Message = RequestView | ResponseView


def normalize_headers(headers: Iterable[tuple[str, str]]) -> tuple[Header, ...]:
    return tuple((name.lower(), value) for name, value in headers)


def normalize_authority(scheme: str, authority: str) -> str:
    """Lowercase the host and drop the scheme's default port (RFC 9110 §4.2.3)."""
    authority = authority.lower()
    host, sep, port = authority.rpartition(":")
    if sep and "]" not in port and port == _DEFAULT_PORTS.get(scheme.lower()):
        return host
    return authority


def target_uri(view: RequestView) -> str:
    """``@target-uri``: scheme://authority/path?query (RFC 9421 §2.2.2)."""
    scheme = view.scheme.lower()
    query = "" if view.query is None else "?" + view.query
    return f"{scheme}://{normalize_authority(scheme, view.authority)}{view.path or '/'}{query}"


def _form_encode(value: str) -> str:
    """WHATWG "percent-encode after encoding", application/x-www-form-urlencoded set,
    space as %20 (RFC 9421 §2.2.8)."""
    return "".join(chr(b) if b in _FORM_SAFE else f"%{b:02X}" for b in value.encode("utf-8"))


def _form_decode(value: str) -> str:
    raw = value.replace("+", " ").encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and _is_hex(raw[i + 1:i + 3]):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", errors="replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def query_params(query: str | None) -> list[tuple[str, str]]:
    """Parse a query as application/x-www-form-urlencoded (WHATWG URL §5.1)."""
    pairs: list[tuple[str, str]] = []
    for sequence in (query or "").split("&"):
        if not sequence:
            continue
        name, _, value = sequence.partition("=")
        pairs.append((_form_decode(name), _form_decode(value)))
    return pairs


def _field_lines(headers: Sequence[Header], name: str) -> list[str]:
    lines = [value for key, value in headers if key == name]
    if not lines:
        raise SignatureBaseError(f"covered field {name!r} is not in the message")
    # obs-fold needs a line feed; without one the substitution is a (costly) no-op.
    return [(_OBS_FOLD.sub(" ", value) if "\n" in value else value).strip(" \t")
            for value in lines]


def _parse_structured(tltype: str, value: str, name: str) -> Any:
    try:
        return http_sf.parse(value.encode("ascii"), tltype=tltype)
    except ValueError as exc:  # StructuredFieldError, UnicodeEncodeError
        raise SignatureBaseError(f"field {name!r} is not a valid structured field") from exc


def _field_value(headers: Sequence[Header], component: ComponentId) -> str:
    name = component.name
    flags = {key for key, _ in component.params}
    unknown = flags - {"sf", "key", "bs", "req"}
    if unknown:
        raise SignatureBaseError(f"unsupported parameter(s) {sorted(unknown)} on {name!r}")
    for flag in ("sf", "bs", "req"):
        if flag in flags and component.param(flag) is not True:
            raise SignatureBaseError(f"parameter {flag!r} must be a boolean flag")
    if "bs" in flags and flags & {"sf", "key"}:
        raise SignatureBaseError("bs cannot be combined with sf or key (RFC 9421 §2.1)")
    lines = _field_lines(headers, name)
    if "bs" in flags:
        try:
            return ", ".join(":" + base64.b64encode(line.encode("latin-1")).decode() + ":"
                             for line in lines)
        except UnicodeEncodeError as exc:
            raise SignatureBaseError(f"field {name!r} is not made of octets") from exc
    combined = ", ".join(lines)
    if "key" in flags:
        key = component.param("key")
        if type(key) is not str:
            raise SignatureBaseError("parameter 'key' must be a string")
        dictionary = _parse_structured("dictionary", combined, name)
        if key not in dictionary:
            raise SignatureBaseError(f"field {name!r} has no member {key!r}")
        try:
            return ser_item_or_inner_list(dictionary[key])
        except ValueError as exc:
            raise SignatureBaseError(f"field {name!r} cannot be serialised") from exc
    if "sf" in flags:
        kind = STRUCTURED_FIELD_TYPES.get(name)
        if kind is None:
            raise SignatureBaseError(f"the structured type of field {name!r} is unknown")
        parsed = _parse_structured(kind, combined, name)
        try:
            return http_sf.ser(parsed)
        except ValueError as exc:  # e.g. an empty Dictionary or List
            raise SignatureBaseError(f"field {name!r} cannot be serialised") from exc
    return combined


def _derived_values(view: RequestView, component: ComponentId) -> list[str]:
    name = component.name
    if component.params:
        allowed = {"req", "name"} if name == "@query-param" else {"req"}
        extra = {key for key, _ in component.params} - allowed
        if extra:
            raise SignatureBaseError(f"unsupported parameter(s) {sorted(extra)} on {name!r}")
    getter = _PLAIN_DERIVED.get(name)
    if getter is not None:
        return [getter(view)]
    # @query-param
    wanted = component.param("name")
    if type(wanted) is not str:
        raise SignatureBaseError('"@query-param" needs a string name parameter')
    values = [_form_encode(value) for key, value in query_params(view.query)
              if _form_encode(key) == wanted]
    if not values:
        raise SignatureBaseError(f"query parameter {wanted!r} is not in the message")
    return values


def _request_target(view: RequestView) -> str:
    if view.request_target is not None:
        return view.request_target
    return (view.path or "/") + ("" if view.query is None else "?" + view.query)


# Derived components of a request that take no parameter (RFC 9421 §2.2).
_PLAIN_DERIVED: dict[str, Callable[[RequestView], str]] = {
    "@method": lambda view: view.method,
    "@target-uri": target_uri,
    "@authority": lambda view: normalize_authority(view.scheme, view.authority),
    "@scheme": lambda view: view.scheme.lower(),
    "@request-target": _request_target,
    "@path": lambda view: view.path or "/",
    "@query": lambda view: "?" + (view.query or ""),
}


def component_values(message: Message, component: ComponentId) -> list[str]:
    """The value(s) of one component; several only for a repeated ``@query-param``.

    Raises:
        SignatureBaseError: the component does not apply or is absent (RFC 9421 §2.5).
    """
    if not component.params:  # the common case, as the general path below would answer it
        if not component.is_derived:
            return [", ".join(_field_lines(message.headers, component.name))]
        getter = _PLAIN_DERIVED.get(component.name)
        if getter is not None and isinstance(message, RequestView):
            value = getter(message)
            if value != value.strip() or not value.isprintable():
                raise SignatureBaseError(f"{component.name} has an unprintable value")
            return [value]
    target: Message = message
    if component.param("req") is not None:
        if not isinstance(message, ResponseView):
            raise SignatureBaseError("req is only valid in a response signature")
        if message.request is None:
            raise SignatureBaseError("req needs the related request")
        target = message.request
    if component.name == SIGNATURE_PARAMS:
        raise SignatureBaseError("@signature-params must not be listed as a covered component")
    if component.is_derived:
        if component.name == "@status":
            if not isinstance(target, ResponseView) or component.param("req") is not None:
                raise SignatureBaseError("@status is only valid for a response")
            return [f"{target.status:03d}"]
        if component.name not in DERIVED_REQUEST_COMPONENTS:
            raise SignatureBaseError(f"unknown derived component {component.name!r}")
        if not isinstance(target, RequestView):
            raise SignatureBaseError(f"{component.name} needs req in a response signature")
        values = _derived_values(target, component)
        for value in values:
            if value != value.strip() or not value.isprintable():
                raise SignatureBaseError(f"{component.name} has an unprintable value")
        return values
    return [_field_value(target.headers, component)]


def serialize_signature_params(components: Sequence[ComponentId],
                               params: Sequence[tuple[str, Any]]) -> str:
    """The ``@signature-params`` value: the covered components as an Inner List with the
    signature parameters, in the given order (RFC 9421 §2.3), serialised as an Inner List
    (RFC 9651 §4.1.1.1) with http_sf's serialisers (identifiers, parameter names and
    repeating parameters are serialised once and kept).

    Raises:
        ValueError: a parameter name or value cannot be serialised.
    """
    items = " ".join([c.serialize() for c in components])
    return f"({items}){''.join([_serialize_param(key, value) for key, value in params])}"


def _serialize_param(key: str, value: Any) -> str:
    try:
        return _serialize_param_cached(key, value)
    except TypeError:  # an unhashable value: serialise it uncached (ser_bare_item decides)
        return _serialize_param_uncached(key, value)


def _serialize_param_uncached(key: str, value: Any) -> str:
    name = _ser_key(key)
    return f";{name}" if value is True else f";{name}={ser_bare_item(value)}"


# Names repeat on every request; so do keyid and alg values (a nonce does not).
# typed=True: True == 1 in Python, but they serialise differently.
_ser_key = functools.lru_cache(maxsize=64)(ser_key)
_serialize_param_cached = functools.lru_cache(maxsize=128, typed=True)(_serialize_param_uncached)


def build_signature_base(message: Message, components: Sequence[ComponentId],
                         signature_params: str) -> bytes:
    """Build the signature base (RFC 9421 §2.5) over ``components`` of ``message``.

    ``signature_params`` is the serialised ``@signature-params`` value (see
    :func:`serialize_signature_params`).

    Raises:
        SignatureBaseError: a component is repeated, unknown, absent or malformed, a value
            holds a newline, or the base is not US-ASCII.
    """
    seen: set[tuple[str, frozenset[tuple[str, Any]]]] = set()
    lines: list[str] = []
    for component in components:
        if component.identity in seen:
            raise SignatureBaseError(f"component {component.serialize()} is repeated")
        seen.add(component.identity)
        try:
            identifier = component.serialize()
        except ValueError as exc:
            raise SignatureBaseError("a component identifier cannot be serialised") from exc
        for value in component_values(message, component):
            # SECURITY: RFC 9421 §2.5 — a line break in a value would forge a base line;
            # other controls are not field-content either. (A printable value holds none;
            # the search is for the rest: HTAB, non-ASCII, controls.)
            if not value.isprintable() and _CONTROL.search(value):
                raise SignatureBaseError(f"{identifier} holds a control character")
            lines.append(f"{identifier}: {value}")
    lines.append(f'"{SIGNATURE_PARAMS}": {signature_params}')
    text = "\n".join(lines)
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise SignatureBaseError("the signature base must be US-ASCII (RFC 9421 §2.5)") from exc
