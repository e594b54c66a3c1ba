"""Step 2: the compiled route matcher (pure).

Rule templates are compiled once into a segment trie, so a lookup costs a few dictionary
probes per path segment whatever the number of rules. Matching is byte-exact and
case-sensitive on the raw path (already accepted by path safety); ``{param}`` values are
the raw segment strings.

Precedence, per segment from the left: a literal segment beats ``{param}``, which beats
``/**``; the first template in that order that matches the whole path is *the* matching
path. Its rules decide the method: when none of them lists the method the answer is 405
with ``Allow``, even if a less specific template would accept it. A broad rule (a public
``/**``, say) therefore never takes over methods of a more specific route.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from sidecar.config.rbac import ALLOWED_METHODS, REST, RBACConfig
from sidecar.context import RouteMatch
from sidecar.problem import BadPath, MethodNotAllowed, NoRoute
from sidecar.rbac import Rule, compile_rule

_PCT_RE = re.compile(r"%[0-9A-Fa-f]{2}")
_LITERAL, _PARAM, _REST = 0, 1, 2
"""The alternatives tried at a trie node, in precedence order."""


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """The rules of one template (one pattern): method -> rule, and the ``Allow`` value."""

    by_method: Mapping[str, Rule]
    allow: str


@dataclass(slots=True)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    exact: _Endpoint | None = None
    rest: _Endpoint | None = None


class RouteTable:
    """The :class:`sidecar.stages.Router` of an ``rbac`` section."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        """Compile rules into the trie.

        Raises:
            ValueError: two rules claim one method on one pattern (config validation
                reports this first, with its location).
        """
        self.rules = rules
        self._root = _Node()
        pending: dict[tuple[int, str], dict[str, Rule]] = {}
        nodes: dict[tuple[int, str], tuple[_Node, str]] = {}
        for rule in rules:
            node, slot = self._insert(rule.segments)
            key = (id(node), slot)
            nodes[key] = (node, slot)
            methods = pending.setdefault(key, {})
            for method in rule.methods:
                if method in methods:
                    raise ValueError(f"rules {methods[method].name!r} and {rule.name!r} both "
                                     f"match {method} {rule.path}")
                methods[method] = rule
        for key, by_method in pending.items():
            node, slot = nodes[key]
            allow = ", ".join(m for m in ALLOWED_METHODS if m in by_method)
            setattr(node, slot, _Endpoint(dict(by_method), allow))

    @classmethod
    def from_config(cls, cfg: RBACConfig) -> RouteTable:
        """Compile the validated ``rbac`` section."""
        return cls(tuple(compile_rule(rule, i) for i, rule in enumerate(cfg.rules)))

    def _insert(self, segments: tuple[str, ...]) -> tuple[_Node, str]:
        node = self._root
        for seg in segments:
            if seg == REST:
                return node, "rest"
            if seg.startswith("{"):
                node.param = node.param or _Node()
                node = node.param
            else:
                node = node.literals.setdefault(seg, _Node())
        return node, "exact"

    def match(self, method: str, path: str) -> RouteMatch:
        """Find the rule for ``method`` on the raw ``path``.

        Raises:
            NoRoute: no template matches the path (404).
            MethodNotAllowed: the most specific matching template has no rule for the
                method; ``Allow`` lists the methods it has (405).
            BadPath: a percent-encoded segment decodes to a literal segment of a rule at
                that position (it would reach the backend as that literal).
        """
        if not path.startswith("/"):
            raise NoRoute(f"not an origin-form path: {path[:64]!r}")
        segments = path[1:].split("/")
        result = _find(self._root, segments, "%" in path)
        if result is None:
            raise NoRoute("no rule matches the path")
        found, values = result
        rule = found.by_method.get(method)
        if rule is None:
            raise MethodNotAllowed(f"{method[:32]} not in {found.allow}",
                                   headers={"Allow": found.allow})
        params = dict(zip(rule.param_names, values, strict=True)) if values else {}
        return RouteMatch(rule=rule, name=rule.name, params=params, public=rule.public)


def _find(root: _Node, segments: list[str], encoded: bool
          ) -> tuple[_Endpoint, list[str]] | None:
    """Depth-first in precedence order (literal, {param}, /**), iteratively; returns the
    endpoint and the parameter values of the winning branch."""
    values: list[str] = []
    # Backtracking points: (node, segment index, next alternative, len(values)).
    stack: list[tuple[_Node, int, int, int]] = []
    node, i, stage, n = root, 0, _LITERAL, len(segments)
    while True:
        if i == n:
            # `/prefix/**` also matches `/prefix` itself.
            found = node.exact or node.rest
            if found is not None:
                return found, values
        else:
            seg = segments[i]
            if stage == _LITERAL:
                child = node.literals.get(seg)
                if child is not None:
                    if node.param is not None or node.rest is not None:
                        stack.append((node, i, _PARAM, len(values)))
                    node, i = child, i + 1
                    continue
                if encoded and node.literals and _aliases_literal(seg, node.literals):
                    # SECURITY: RFC 3986 §6.2.2.2 — the backend decodes %61dmin to admin;
                    # matching it as a parameter would bypass the literal rule.
                    raise BadPath("percent-encoded segment equals a literal rule segment")
                stage = _PARAM
            if stage == _PARAM and node.param is not None and seg:
                if node.rest is not None:
                    stack.append((node, i, _REST, len(values)))
                values.append(seg)
                node, i, stage = node.param, i + 1, _LITERAL
                continue
            if node.rest is not None:
                return node.rest, values
        if not stack:
            return None
        node, i, stage, kept = stack.pop()
        del values[kept:]


def _aliases_literal(seg: str, literals: Mapping[str, _Node]) -> bool:
    if not _PCT_RE.search(seg):
        return False
    return unquote(seg, errors="surrogateescape") in literals


__all__ = ["RouteTable"]
