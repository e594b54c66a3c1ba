"""Path safety: refuse every request path that two parsers could read differently.

The RBAC decision is made on the raw path and that same raw path is forwarded, so the only
way to bypass a rule is a path the backend normalises into something else. We therefore
refuse, with 400 ``bad_path``, every path whose meaning depends on normalisation:

* dot segments (``.``, ``..``), empty segments (``//``), ``;`` (matrix/path parameters,
  ``..;`` tricks on Java backends), raw ``\\``, controls, NUL, non-ASCII;
* percent-encoding of anything that could also appear literally (``%2F``, ``%2e``,
  ``%61`` ...), of ``%`` itself (double encoding), of controls, and of any byte >= 0x80
  (which also covers overlong UTF-8 such as ``%C0%AE``); invalid percent-encoding.

# SECURITY: CVE-2021-41773 (Apache %2e traversal), CVE-2020-1957 (Shiro ``;``), Spring
# ``..;/`` bypasses, and RFC 3986 §6.2.2 (normalisation-equivalent forms).
"""

from __future__ import annotations

import re

from sidecar.problem import BadPath

# pchar without ";" (RFC 3986 §3.3) plus "/" and "%" (validated separately).
_ALLOWED = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,=:@/%]*")
# Only characters that can never appear literally in a path may be percent-encoded:
# space " # < > ? [ ] ^ ` { | }. Encoding anything else creates a second spelling of it.
_ENCODABLE = frozenset(
    {0x20, 0x22, 0x23, 0x3C, 0x3E, 0x3F, 0x5B, 0x5D, 0x5E, 0x60, 0x7B, 0x7C, 0x7D})
_PCT = re.compile(r"%(..?)")
_HEX = frozenset("0123456789abcdefABCDEF")


def check_path(raw_path: str) -> None:
    """Accept ``raw_path`` (the path part of the request target, no query) or raise.

    Raises:
        BadPath: the path is ambiguous or unsafe; ``log_detail`` says why.
    """
    if _ALLOWED.fullmatch(raw_path) is None:
        raise BadPath("path contains a forbidden character or is not origin-form")
    if "//" in raw_path:
        raise BadPath("empty path segment")
    if "/." in raw_path:
        for segment in raw_path.split("/"):
            if segment in (".", ".."):
                raise BadPath("dot segment")
    if "%" in raw_path:
        _check_percent(raw_path)


def _check_percent(raw_path: str) -> None:
    if raw_path.count("%") != len(_PCT.findall(raw_path)):
        raise BadPath("invalid percent-encoding")
    for match in _PCT.finditer(raw_path):
        digits = match.group(1)
        if len(digits) != 2 or not (digits[0] in _HEX and digits[1] in _HEX):
            raise BadPath("invalid percent-encoding")
        if int(digits, 16) not in _ENCODABLE:
            raise BadPath("percent-encoding of a character with a literal form, a control"
                          " or a non-ASCII byte")


_METHOD_OVERRIDE_QUERY = re.compile(r"(?:^|&)_method(?:=|&|$)", re.IGNORECASE)


def has_method_override_query(raw_query: str) -> bool:
    """True when the query carries ``_method`` (a framework method override)."""
    return bool(raw_query) and _METHOD_OVERRIDE_QUERY.search(raw_query) is not None
