"""``sidecar run``: serve the proxy and the admin port."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from sidecar.cli import add_config_argument
from sidecar.config import ConfigError, default_config_path, load_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="run the proxy and the admin server",
                            description="Run the proxy and the admin server.")
    add_config_argument(parser)
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes sharing the port (default: server.workers)")
    parser.add_argument("--log-level", default=os.environ.get("SIDECAR_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s",
    )
    # aiohttp's own loggers may print request lines with query strings: keep them quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    path = args.config or default_config_path()
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid config", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        logging.getLogger("sidecar").warning("config %s", warning)
    workers = args.workers if args.workers is not None else loaded.config.server.workers
    if workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1 and not args.worker:
        from sidecar.supervisor import Supervisor

        return Supervisor(path, workers, loaded.config.server.shutdown_grace).run()
    from sidecar.server import install_uvloop, serve

    install_uvloop()
    try:
        return asyncio.run(serve(loaded, reuse_port=args.worker))
    except ConfigError as exc:  # e.g. sidecar.tls.TLSSetupError: a file that does not load
        print(f"{path}: cannot start", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
