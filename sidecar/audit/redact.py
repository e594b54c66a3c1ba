"""Data minimisation for audit events (pure).

What the audit log may hold is decided here, once:

* the request path and query, with configured query parameters replaced by ``[REDACTED]``
  and every Luhn-valid 13-19 digit run (a card number, PCI DSS 3.3/3.4) masked whether or
  not its parameter is configured;
* security-event fields from a per-type allowlist, each value a bounded scalar (or a short
  list of scalars) with card numbers, JWTs and PEM blocks masked.

Nothing else: never a token, secret, ``Authorization`` value, header value or body.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import unquote, unquote_plus

REDACTED = "[REDACTED]"
REDACTED_URL = "%5BREDACTED%5D"
"""``[REDACTED]`` percent-encoded, so a redacted path or query is still a valid URL."""

MAX_STRING = 256
MAX_LIST = 32

# A run of at least 13 digits, optionally split by single separators as card numbers are
# written ("4111 1111 1111 1111", "4111-1111-...", "+" or %20 in a query). Cheap: the regex
# runs in C and finds nothing in ordinary paths; Luhn runs only on what it finds.
_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:(?:[ +\-]|%20)?[0-9]){12,}(?![0-9])")
_SEPARATOR = re.compile(r"[ +\-]|%20")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.")
_SECRETISH = re.compile(r"-----BEGIN|\bbearer\s+\S|\bbasic\s+[A-Za-z0-9+/=]{8,}", re.IGNORECASE)
_USERINFO = re.compile(r"(://)[^/@\s]*@")
# A superset of what _CANDIDATE finds, as a plain character-class run: on hex ids and
# UUIDs it fails in a fifth of the time the exact pattern's nested alternation takes.
_DIGIT_RUN = r"[0-9][0-9 +%\-]{12}"
_MAYBE_CANDIDATE = re.compile(_DIGIT_RUN)
# Anything :func:`safe_string` might change, found in one scan (a superset is fine).
_SUSPECT = re.compile(r"eyJ|-----BEGIN|[Bb][Ee][Aa][Rr][Ee][Rr]\s|[Bb][Aa][Ss][Ii][Cc]\s|"
                      r"://[^/@\s]*@|" + _DIGIT_RUN)

# SECURITY: names whose values are credentials, never recorded whatever a caller passes.
ALWAYS_DENIED_KEYS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "token", "access-token",
    "refresh-token", "id-token", "client-secret", "secret", "password", "private-key",
    "body", "signature", "assertion", "api-key", "x-api-key",
})


# SECURITY: RFC 6750 §2.3 lets clients put a bearer token in ``access_token``; these query
# parameters carry credentials in common APIs and are redacted whatever the config says.
ALWAYS_REDACTED_QUERY = frozenset({
    "access-token", "id-token", "refresh-token", "token", "client-secret", "client-assertion",
    "assertion", "password", "passwd", "secret", "api-key", "apikey", "code", "signature", "sig",
})


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only) passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_pan(run: str) -> bool:
    groups = _SEPARATOR.split(run)
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19:
        return False
    # Separated runs must look like card formatting (4-4-4-4, 4-6-5, ...), which keeps dates
    # and phone numbers from being masked.
    if len(groups) > 1 and any(len(g) < 3 for g in groups):
        return False
    return luhn_valid(digits)


def _mask_run(match: re.Match[str], mask: str) -> str:
    run = match.group(0)
    if _is_pan(run):
        return mask
    # A long run that is not itself a PAN may still contain one between separators.
    parts = _SEPARATOR.split(run)
    if len(parts) == 1:
        return run
    seps = _SEPARATOR.findall(run)
    out = [mask if 13 <= len(p) <= 19 and luhn_valid(p) else p for p in parts]
    return "".join(p + s for p, s in zip(out, [*seps, ""], strict=True))


def mask_pans(text: str, mask: str = REDACTED) -> str:
    """Replace every Luhn-valid 13-19 digit run in ``text`` by ``mask``."""
    if len(text) < 13 or _MAYBE_CANDIDATE.search(text) is None:
        return text
    return _CANDIDATE.sub(lambda m: _mask_run(m, mask), text)


def _contains_pan(text: str) -> bool:
    return mask_pans(text, "\x00") != text


def _url_component(raw: str, plus_is_space: bool) -> str:
    if "eyJ" in raw and _JWT.search(raw):
        return REDACTED_URL  # SECURITY: a JWT anywhere in the URL is a bearer credential
    masked = mask_pans(raw, REDACTED_URL)
    if "%" in masked or (plus_is_space and "+" in masked):
        # SECURITY: a PAN can hide behind percent-encoded digits (%34%31...).
        decoded = unquote_plus(masked) if plus_is_space else unquote(masked)
        if _contains_pan(decoded):
            return REDACTED_URL
    return masked


def redact_path(path: str) -> str:
    """The path with card numbers masked, segment by segment."""
    if len(path) < 13:
        return path
    if "%" not in path and "eyJ" not in path:
        return mask_pans(path, REDACTED_URL)
    return "/".join(_url_component(seg, plus_is_space=False) for seg in path.split("/"))


def _fold(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def compile_names(names: Iterable[str]) -> frozenset[str]:
    """Names as matched: lowercased, ``_`` and ``.`` read as ``-``; always including
    :data:`ALWAYS_REDACTED_QUERY`."""
    return frozenset(_fold(n) for n in names) | ALWAYS_REDACTED_QUERY


def redact_query(query: str, names: frozenset[str]) -> str:
    """The raw query with values of ``names`` (from :func:`compile_names`) replaced by
    ``%5BREDACTED%5D`` and card numbers masked; the rest is kept byte for byte."""
    if not query:
        return query
    out = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq and _fold(unquote_plus(name)) in names:
            out.append(f"{_url_component(name, True)}={REDACTED_URL}")
        elif eq:
            out.append(f"{_url_component(name, True)}={_url_component(value, True)}")
        else:
            out.append(_url_component(part, True))
    return "&".join(out)


def redact_target(path: str, query: str, names: frozenset[str]) -> str:
    """``path[?query]`` as the audit event records it."""
    if not query:
        return redact_path(path)
    return f"{redact_path(path)}?{redact_query(query, names)}"


def safe_string(value: str) -> str:
    """A string value fit for the audit log: credentials dropped, card numbers masked,
    length capped at :data:`MAX_STRING`."""
    if len(value) <= MAX_STRING and _SUSPECT.search(value) is None:
        return value  # the common case: one C-level scan finds nothing to clean
    if _JWT.search(value) or _SECRETISH.search(value):
        return REDACTED
    value = mask_pans(value)
    if "://" in value:
        value = _USERINFO.sub(r"\1[REDACTED]@", value)
    if len(value) > MAX_STRING:
        value = value[:MAX_STRING] + "..."
    return value


def safe_scalar(value: Any) -> tuple[bool, Any]:
    """``(keep, value)`` for a JSON scalar; anything else is not kept."""
    if value is None or isinstance(value, bool | int):
        return True, value
    if isinstance(value, float):
        return True, value if math.isfinite(value) else None
    if isinstance(value, str):
        return True, safe_string(value)
    return False, None


def safe_value(value: Any) -> tuple[bool, Any]:
    """A scalar, or a list/tuple/set of at most :data:`MAX_LIST` scalars (sorted when a set)."""
    if isinstance(value, list | tuple | frozenset | set):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        kept = []
        for item in items[:MAX_LIST]:
            ok, clean = safe_scalar(item)
            if ok:
                kept.append(clean)
        return True, kept
    return safe_scalar(value)


FieldKind = Literal["str", "str?", "int", "num", "num?", "bool", "strs"]


def _typed(value: Any, kind: FieldKind) -> tuple[bool, Any]:
    if value is None:
        return kind in ("str?", "num?"), None
    if kind in ("str", "str?"):
        return (True, safe_string(value)) if isinstance(value, str) else (False, None)
    if isinstance(value, bool):
        return kind == "bool", value
    if kind == "int":
        return isinstance(value, int), value
    if kind in ("num", "num?"):
        ok = isinstance(value, int | float) and math.isfinite(value)
        return ok, value
    if kind == "strs" and isinstance(value, list | tuple | frozenset | set):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        return True, [safe_string(v) for v in items[:MAX_LIST] if isinstance(v, str)]
    return False, None


def filter_fields(fields: Mapping[str, Any], allowed: Mapping[str, FieldKind],
                  denied: frozenset[str]) -> dict[str, Any]:
    """Keep the ``allowed`` keys of ``fields`` whose values have the allowed JSON type.

    SECURITY: defence in depth against a careless caller: an unknown key, a key in
    ``denied`` (folded like header names), a value of the wrong type or a nested object is
    dropped, never recorded; strings are cleaned by :func:`safe_string`.
    """
    out: dict[str, Any] = {}
    for key, value in fields.items():
        kind = allowed.get(key)
        if kind is None or _fold(key) in denied or _fold(key) in ALWAYS_DENIED_KEYS:
            continue
        ok, clean = _typed(value, kind)
        if ok:
            out[key] = clean
    return out


_SECRET_KEY = re.compile(r"auth|secret|passw|token|cookie|credential|private|bearer|api.?key|"
                         r"signature|assertion|body", re.IGNORECASE)


def filter_flags(flags: Mapping[str, Any], denied: frozenset[str]) -> dict[str, Any]:
    """Stage flags (``ctx.audit_flags``) made safe: keys must be short identifiers; a key that
    names a credential keeps only a boolean or number; strings are cleaned."""
    out: dict[str, Any] = {}
    for key, value in list(flags.items())[:MAX_LIST]:
        if not isinstance(key, str) or not key.isidentifier() or len(key) > 64:
            continue
        if _fold(key) in denied or _fold(key) in ALWAYS_DENIED_KEYS:
            continue
        if _SECRET_KEY.search(key) and not (value is None or isinstance(value, bool | int)):
            continue
        ok, clean = safe_value(value)
        if ok:
            out[key] = clean
    return out
