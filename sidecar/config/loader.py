"""Load, substitute and validate a config file: the only place YAML becomes a config.

Every problem is reported at once, each as ``path.to.field: message (line N)``, so an
operator fixes a file in one pass. Cross-section checks that need more than one section
(a rule naming a rate-limit policy, say) live in :func:`cross_check`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

if TYPE_CHECKING:
    from sidecar.config.models import SidecarConfig

DEFAULT_CONFIG_PATH = "config/sidecar.yaml"
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One error or warning, located in the YAML."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"{self.path or '<root>'}: {self.message}{where}"


class ConfigError(Exception):
    """The config is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config with where it came from and any warnings."""

    config: SidecarConfig
    source: str
    warnings: tuple[ConfigIssue, ...] = field(default=())


CrossCheck = Callable[["SidecarConfig"], Iterable[ConfigIssue]]
_cross_checks: list[CrossCheck] = []


def register_cross_check(check: CrossCheck) -> CrossCheck:
    """Register a whole-config check (used as a decorator by section modules).

    A check yields issues; an issue whose message starts with ``warning:`` is a warning
    (reported by ``sidecar check``, not fatal).
    """
    _cross_checks.append(check)
    return check


def default_config_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("SIDECAR_CONFIG") or DEFAULT_CONFIG_PATH


def _line_index(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*loc, key), lines)
            lines[(*loc, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*loc, i), lines)


def _substitute(value: Any, env: Mapping[str, str], loc: Loc, issues: list[ConfigIssue],
                lines: dict[Loc, int]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string scalar."""
    if isinstance(value, dict):
        return {k: _substitute(v, env, (*loc, k), issues, lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, (*loc, i), issues, lines) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, has_default, default = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        if has_default is not None:
            return default or ""
        issues.append(ConfigIssue(_dotted(loc), f"environment variable {name} is not set",
                                  _nearest_line(loc, lines)))
        return ""

    return _ENV_RE.sub(replace, value)


def _dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _nearest_line(loc: Loc, lines: dict[Loc, int]) -> int | None:
    while True:
        if loc in lines:
            return lines[loc]
        if not loc:
            return None
        loc = loc[:-1]


def _clean_loc(loc: tuple[Any, ...]) -> Loc:
    # pydantic adds union-branch and validator tags ("function-after[...]", model names) to
    # locations; the YAML path is what an operator needs.
    return tuple(p for p in loc if isinstance(p, int) or not any(c in p for c in "[]()"))


def parse_text(text: str, source: str = "<string>",
               env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Validate YAML text into a :class:`LoadedConfig`.

    Raises:
        ConfigError: with every problem found.
    """
    # Imported here so section modules can import this module (register_cross_check,
    # ConfigIssue) without a cycle through the root model.
    from sidecar.config.models import SidecarConfig

    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([ConfigIssue("<yaml>", str(problem), line)]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("<root>", "the document must be a mapping", 1)])
    lines: dict[Loc, int] = {}
    if node is not None:
        _line_index(node, (), lines)
    issues: list[ConfigIssue] = []
    data = _substitute(data, env, (), issues, lines)
    try:
        config = SidecarConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = _clean_loc(err["loc"])
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key (not part of the config schema)"
            elif message.startswith("Value error, "):
                message = message[len("Value error, "):]
            issues.append(ConfigIssue(_dotted(loc), message, _nearest_line(loc, lines)))
        raise ConfigError(issues) from exc
    if issues:
        raise ConfigError(issues)
    warnings: list[ConfigIssue] = []
    for check in _cross_checks:
        for issue in check(config):
            line = _nearest_line(tuple(_split_dotted(issue.path)), lines)
            located = ConfigIssue(issue.path, issue.message, issue.line or line)
            (warnings if issue.message.startswith("warning:") else issues).append(located)
    if issues:
        raise ConfigError(issues)
    return LoadedConfig(config=config, source=source, warnings=tuple(warnings))


def _split_dotted(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return parts


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read and validate a config file.

    Relative file paths inside the config are left as written; they resolve against the
    working directory, like every other path the operator passes.

    Raises:
        ConfigError: the file is unreadable or invalid (every problem listed).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("<file>", f"cannot read {path}: {exc.strerror}")]) from exc
    return parse_text(text, source=str(path), env=env)
