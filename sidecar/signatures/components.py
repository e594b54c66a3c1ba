"""RFC 9421 component identifiers: a name and ordered parameters.

Pure values shared by the config model (to validate ``signatures.covered``), the signature
base builder and the signers. Identifiers are parsed with ``http_sfv`` and serialised back
through it, so what is signed is always the strict RFC 8941 serialisation.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from http_sfv.item import Item

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


@dataclass(frozen=True, slots=True)
class ComponentId:
    """A component identifier such as ``"@query-param";name="id"`` or ``"content-type"``."""

    name: str
    params: tuple[tuple[str, ParamValue], ...] = ()

    @property
    def is_derived(self) -> bool:
        return self.name.startswith("@")

    def param(self, key: str) -> ParamValue | None:
        for name, value in self.params:
            if name == key:
                return value
        return None

    @property
    def identity(self) -> tuple[str, frozenset[tuple[str, ParamValue]]]:
        """Equality key: parameter order does not matter when comparing (RFC 9421 §2)."""
        return self.name, frozenset(self.params)

    def to_item(self) -> Any:
        item = Item(self.name)
        for key, value in self.params:
            item.params[key] = value
        return item

    def serialize(self) -> str:
        """The strict serialisation used in the signature base and ``Signature-Input``.

        Raises:
            ValueError: the name or a parameter cannot be serialised as a Structured Field.
        """
        return _serialize(self)

    def __str__(self) -> str:
        return self.serialize()


@functools.lru_cache(maxsize=1024)
def _serialize(component: ComponentId) -> str:
    # Hot path: the same few identifiers are serialised on every request.
    return str(component.to_item())


def component_from_item(item: Any) -> ComponentId:
    """Convert a parsed ``http_sfv`` Item into a :class:`ComponentId`.

    Raises:
        ValueError: the item is not a String (RFC 9421 §2: names are ``sf-string``), or a
            parameter value is not a String, Boolean or Integer.
    """
    if not isinstance(item, Item) or type(item.value) is not str:
        raise ValueError("component identifiers must be Structured Field Strings")
    name: str = item.value
    if name != name.lower():
        raise ValueError(f"component name {name!r} must be lowercase")
    params: list[tuple[str, ParamValue]] = []
    for key, value in item.params.items():
        if type(value) not in (str, bool, int):
            raise ValueError(f"component parameter {key!r} has an unsupported type")
        params.append((str(key), value))
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
        item = Item()
        try:
            item.parse(text.encode("ascii"))
        except (ValueError, UnicodeError) as exc:
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
