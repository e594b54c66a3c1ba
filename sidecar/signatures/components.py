"""RFC 9421 component identifiers: a name and ordered parameters.

Pure values shared by the config model (to validate ``signatures.covered``), the signature
base builder and the signers. Identifiers are parsed with ``http_sf`` (RFC 9651) and
serialised back through it, so what is signed is always the strict serialisation.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import http_sf
from http_sf.item import ser_item

ParamValue = str | bool | int
"""The parameter values RFC 9421 defines for component identifiers (strings and flags)."""

DERIVED_REQUEST_COMPONENTS = frozenset({
    "@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query",
    "@query-param",
})
"""Derived components of a request (RFC 9421 §2.2)."""

DERIVED_COMPONENTS = DERIVED_REQUEST_COMPONENTS | {"@status"}
SIGNATURE_PARAMS = "@signature-params"

# RFC 9110 §5.1: a field name is a token; RFC 9421 §2.1 wants it lowercased.
_FIELD_NAME_RE = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


Identity = tuple[str, frozenset[tuple[str, ParamValue]]]


@dataclass(frozen=True, slots=True)
class ComponentId:
    """A component identifier such as ``"@query-param";name="id"`` or ``"content-type"``."""

    name: str
    params: tuple[tuple[str, ParamValue], ...] = ()
    is_derived: bool = field(init=False, repr=False, compare=False)
    """The name starts with ``@`` (RFC 9421 §2.2)."""
    identity: Identity = field(init=False, repr=False, compare=False)
    """Equality key: parameter order does not matter when comparing (RFC 9421 §2)."""
    _serialized: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: identifiers are built at startup or interned by the parser, and
        # read on every request.
        object.__setattr__(self, "is_derived", self.name.startswith("@"))
        object.__setattr__(self, "identity", (self.name, frozenset(self.params)))

    def param(self, key: str) -> ParamValue | None:
        for name, value in self.params:
            if name == key:
                return value
        return None

    def serialize(self) -> str:
        """The strict serialisation used in the signature base and ``Signature-Input``
        (computed on first use, then kept).

        Raises:
            ValueError: the name or a parameter cannot be serialised as a Structured Field.
        """
        if self._serialized:  # never empty once computed: a String has its quotes
            return self._serialized
        text = ser_item((self.name, dict(self.params)))
        object.__setattr__(self, "_serialized", text)
        return text

    def __str__(self) -> str:
        return self.serialize()


def component_from_item(item: Any) -> ComponentId:
    """Convert a parsed ``http_sf`` Item (a ``(value, params)`` pair) into a
    :class:`ComponentId`; the same parsed identifier always yields the same object.

    Raises:
        ValueError: the item is not a String (RFC 9421 §2: names are ``sf-string``), or a
            parameter value is not a String, Boolean or Integer.
    """
    if type(item) is not tuple or len(item) != 2:
        raise ValueError("component identifiers must be Structured Field Strings")
    value, params = item
    # Typed key: True and 1, or "a" and Token("a"), compare equal but are different items.
    key = (type(value), value,
           tuple([(k, type(v), v) for k, v in params.items()]) if params else ())
    try:
        return _interned(key)
    except TypeError as exc:  # an unhashable value: not a bare item
        raise ValueError("component identifiers must be Structured Field Strings") from exc


@functools.lru_cache(maxsize=512)
def _interned(key: tuple[type, Any, tuple[tuple[str, type, Any], ...]]) -> ComponentId:
    # SECURITY: only valid identifiers are cached (a raise is not), and the cache is bounded,
    # so a flood of distinct identifiers costs parsing, not memory.
    value_type, name, typed_params = key
    if value_type is not str:
        raise ValueError("component identifiers must be Structured Field Strings")
    if name != name.lower():
        raise ValueError(f"component name {name!r} must be lowercase")
    params: list[tuple[str, ParamValue]] = []
    for param, param_type, param_value in typed_params:
        if param_type not in (str, bool, int):
            raise ValueError(f"component parameter {param!r} has an unsupported type")
        params.append((param, param_value))
    return ComponentId(name, tuple(params))


def parse_component_id(text: str) -> ComponentId:
    """Parse an identifier as written in config or on the command line.

    Accepts a bare name (``@method``, ``content-type``) or a serialised String Item with
    parameters (``"@query-param";name="id"``, ``"example-dict";key="a"``).

    Raises:
        ValueError: the text is neither.
    """
    text = text.strip()
    if text.startswith('"'):
        try:
            item = http_sf.parse(text.encode("ascii"), tltype="item")
        except ValueError as exc:  # StructuredFieldError, UnicodeEncodeError
            raise ValueError(f"{text!r} is not a valid component identifier") from exc
        component = component_from_item(item)
    else:
        component = ComponentId(text)
    check_name(component.name)
    return component


def check_name(name: str) -> None:
    """Raises ValueError unless ``name`` is a known derived component or a field name."""
    if name.startswith("@"):
        if name not in DERIVED_COMPONENTS and name != SIGNATURE_PARAMS:
            raise ValueError(f"unknown derived component {name!r}")
    elif not _FIELD_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a lowercase HTTP field name")
