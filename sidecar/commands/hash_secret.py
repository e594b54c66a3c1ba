"""``sidecar hash-secret``: hash a client secret for ``token_endpoint.clients[].secret_hash``."""

from __future__ import annotations

import argparse
import getpass
import sys

from sidecar.secrets import DEFAULT_N, DEFAULT_P, DEFAULT_R, hash_secret


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "hash-secret", help="hash a client secret read on stdin",
        description="Read a client secret on stdin (one line; prompted without echo on a "
                    "terminal) and print scrypt$N$r$p$<salt b64>$<hash b64> for "
                    "token_endpoint.clients[].secret_hash.")
    parser.add_argument("--n", type=int, default=DEFAULT_N,
                        help=f"scrypt CPU/memory cost, a power of two (default {DEFAULT_N})")
    parser.add_argument("--r", type=int, default=DEFAULT_R,
                        help=f"scrypt block size (default {DEFAULT_R})")
    parser.add_argument("--p", type=int, default=DEFAULT_P,
                        help=f"scrypt parallelism (default {DEFAULT_P})")
    parser.set_defaults(func=run)


def _read_secret() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("client secret: ")
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def run(args: argparse.Namespace) -> int:
    secret = _read_secret().removesuffix("\r")
    if not secret:
        print("hash-secret: the secret is empty", file=sys.stderr)
        return 1
    try:
        print(hash_secret(secret, n=args.n, r=args.r, p=args.p))
    except ValueError as exc:
        print(f"hash-secret: {exc}", file=sys.stderr)
        return 1
    return 0
