"""``sidecar demo``: a mock payments backend and the sidecar in front of it, on loopback."""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo", help="run a loopback demo (mock backend + sidecar) and print commands to try",
        description="Start a mock payments backend and a sidecar in front of it on loopback "
                    "(embedded issuer, in-memory rate limits, generated keys), then print "
                    "copy-paste commands.")
    parser.add_argument("--port", type=int, default=8000, help="sidecar port (8000)")
    parser.add_argument("--admin-port", type=int, default=9901, help="admin port (9901)")
    parser.add_argument("--backend-port", type=int, default=8080, help="mock backend (8080)")
    parser.add_argument("--dir", default=None, help="where to write keys (a new temp dir)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sidecar.demo.run import DemoPorts, serve

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="sidecar-demo-"))
    return asyncio.run(serve(directory, DemoPorts(args.port, args.admin_port, args.backend_port)))
