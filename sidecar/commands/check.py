"""``sidecar check``: validate a config and print a summary, or every error."""

from __future__ import annotations

import argparse

from sidecar.cli import add_config_argument, load_config_or_report
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
    loaded = load_config_or_report(args.config)
    if loaded is None:
        return 1
    print(f"{loaded.source}: OK")
    for line in summary(loaded.config):
        print(f"  {line}")
    return 0
