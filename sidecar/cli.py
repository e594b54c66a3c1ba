"""The ``sidecar`` command line: argv and the environment are read here and only here."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from sidecar import __version__, commands
from sidecar.config import ConfigError, LoadedConfig, default_config_path, load_config


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on usage errors; that is our contract too, with the usage line.
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sidecar",
        description="Security sidecar for payment APIs.",
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``-c/--config``: default ``$SIDECAR_CONFIG``, else ``config/sidecar.yaml``."""
    parser.add_argument(
        "-c", "--config", default=None, metavar="FILE",
        help="config file (default: $SIDECAR_CONFIG, else config/sidecar.yaml)",
    )


def load_config_or_report(path_arg: str | None) -> LoadedConfig | None:
    """Load the config named by ``-c`` (or the default); on failure print every error to
    stderr and return None (the caller exits 1). Warnings are printed too."""
    path = path_arg or default_config_path()
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid config ({len(exc.issues)} error(s))", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None
    for warning in loaded.warnings:
        print(f"  {warning}", file=sys.stderr)
    return loaded
