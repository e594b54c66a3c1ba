"""``Signature-Input`` and ``Signature`` (RFC 9421 §4) and strict Dictionary parsing.

Parsed with ``http_sf`` (RFC 9651), never with regular expressions. Several field lines are
combined with ", " before parsing, as HTTP combines them; a label that appears twice (on one
line or across lines) makes the whole field invalid rather than "last one wins" (RFC 9651
§4.2.2), so two signatures can never hide behind one label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import http_sf

from sidecar.signatures.base import serialize_signature_params
from sidecar.signatures.components import ComponentId, component_from_item

MAX_SIGNATURES = 8
"""More labels than this in one request is refused: bounds the crypto work per request."""
MAX_FIELD_BYTES = 8192

_INT_PARAMS = frozenset({"created", "expires"})
_STR_PARAMS = frozenset({"keyid", "alg", "nonce", "tag"})
_KNOWN_PARAMS = _INT_PARAMS | _STR_PARAMS


class MalformedField(ValueError):
    """A structured field does not parse, or breaks a rule of RFC 9421 §4."""


class _DuplicateMember(http_sf.StructuredFieldError):
    pass


def _refuse_duplicate_member(key: str, context: str) -> None:
    # SECURITY: RFC 9651 would keep the last duplicate; a repeated signature label or
    # digest algorithm is an attempt to smuggle a second value past the first. (Parameters
    # keep the last value: what was parsed is what is checked and signed.)
    if context == "dictionary":
        raise _DuplicateMember(f"duplicate key {key!r}")


def parse_dictionary(lines: Sequence[str], *, strict: bool = True) -> dict[str, Any]:
    """Parse the field lines of one Dictionary field, combined as HTTP combines them.

    Members are http_sf values: an Item is ``(bare_item, params)``, an Inner List
    ``([items], params)``.

    Raises:
        MalformedField: not a Dictionary, or (``strict``) a key appears twice.
    """
    combined = lines[0].strip(" \t") if len(lines) == 1 else \
        ", ".join([line.strip(" \t") for line in lines])
    if len(combined) > MAX_FIELD_BYTES:
        raise MalformedField("field is too long")
    try:
        parsed = http_sf.parse(combined.encode("ascii"), tltype="dictionary",
                               on_duplicate_key=_refuse_duplicate_member if strict else None)
    except ValueError as exc:  # StructuredFieldError, UnicodeEncodeError
        raise MalformedField(f"not a valid Dictionary: {exc}") from exc
    if not isinstance(parsed, dict):  # http_sf returns a dict for a Dictionary: narrows the type
        raise MalformedField("not a Dictionary")
    return parsed


@dataclass(frozen=True, slots=True)
class SignatureInput:
    """One ``Signature-Input`` member: the covered components and signature parameters."""

    label: str
    components: tuple[ComponentId, ...]
    params: tuple[tuple[str, Any], ...]
    """Parameters in received order; re-serialised, they are the ``@signature-params`` line."""
    _by_name: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", dict(self.params))

    def param(self, key: str) -> Any:
        return self._by_name.get(key)

    @property
    def keyid(self) -> str | None:
        value = self.param("keyid")
        return value if isinstance(value, str) else None

    def signature_params(self) -> str:
        """The ``@signature-params`` value, rebuilt from the parsed values."""
        # SECURITY: RFC 9421 §3.2 — never the received text: what is verified is exactly what
        # was parsed and checked, so a duplicate or oddly spaced parameter cannot differ
        # between the policy checks and the signature base.
        return serialize_signature_params(self.components, self.params)


def _signature_input(label: str, member: Any) -> SignatureInput:
    items, member_params = member
    if type(items) is not list:
        raise MalformedField(f"Signature-Input member {label!r} must be an Inner List")
    try:
        components = tuple([component_from_item(item) for item in items])
    except ValueError as exc:
        raise MalformedField(f"{label}: {exc}") from exc
    params: list[tuple[str, Any]] = []
    for key, value in member_params.items():
        if key in _INT_PARAMS and type(value) is not int:
            raise MalformedField(f"{label}: {key} must be an Integer")
        if key in _STR_PARAMS and type(value) is not str:
            raise MalformedField(f"{label}: {key} must be a String")
        if key not in _KNOWN_PARAMS:
            raise MalformedField(f"{label}: unknown signature parameter {key!r}")
        params.append((str(key), value))
    return SignatureInput(label=label, components=components, params=tuple(params))


def parse_signatures(input_lines: Sequence[str],
                     signature_lines: Sequence[str]) -> list[tuple[SignatureInput, bytes]]:
    """Pair each ``Signature-Input`` member with its ``Signature`` bytes, in field order.

    A ``Signature`` member without an input is ignored; an input without a signature, a
    member of the wrong type, a duplicate label, an unknown signature parameter or more than
    :data:`MAX_SIGNATURES` labels makes the fields malformed.

    Raises:
        MalformedField: as above.
    """
    inputs = parse_dictionary(input_lines)
    signatures = parse_dictionary(signature_lines)
    if not inputs:
        raise MalformedField("Signature-Input is empty")
    if len(inputs) > MAX_SIGNATURES:
        raise MalformedField(f"more than {MAX_SIGNATURES} signatures")
    pairs: list[tuple[SignatureInput, bytes]] = []
    for label, member in inputs.items():
        signature = signatures.get(label)
        if signature is None:
            raise MalformedField(f"Signature has no member {label!r}")
        value = signature[0]  # an Item (bytes, params) or an Inner List ([...], params)
        if type(value) is not bytes:
            raise MalformedField(f"Signature member {label!r} must be a Byte Sequence")
        pairs.append((_signature_input(label, member), value))
    return pairs
