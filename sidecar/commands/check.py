"""``sidecar check``: validate a config and print a summary, or every error."""

from __future__ import annotations

import argparse
import sys

from sidecar.cli import add_config_argument
from sidecar.config import ConfigError, default_config_path, load_config
from sidecar.config.models import SidecarConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("check", help="validate a config file",
                            description="Validate a config; exit 1 listing every error.")
    add_config_argument(parser)
    parser.set_defaults(func=run)


def summary(config: SidecarConfig) -> list[str]:
    s = config.server
    lines = [
        f"listen: {s.listen} ({'TLS ' + s.tls.min_version + '+' if s.tls else 'plain HTTP'}),"
        f" workers: {s.workers}",
        f"admin: {config.admin.listen}",
        f"upstream: {config.upstream.url}",
    ]
    for name in ("auth", "token_endpoint", "rbac", "redis", "rate_limits", "signatures", "audit"):
        lines.append(f"{name}: {'configured' if getattr(config, name) is not None else 'off'}")
    return lines


def run(args: argparse.Namespace) -> int:
    path = args.config or default_config_path()
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid config ({len(exc.issues)} error(s))", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(f"  {warning}", file=sys.stderr)
    print(f"{path}: OK")
    for line in summary(loaded.config):
        print(f"  {line}")
    return 0
