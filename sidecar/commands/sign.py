"""``sidecar sign``: print the headers that sign a request (RFC 9421 + RFC 9530)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sidecar.signatures.checks  # noqa: F401  (registers the signatures config cross-checks)
from sidecar.client import sign_request
from sidecar.config.signatures import DEFAULT_COVERED, SignatureAlgorithm
from sidecar.signatures.algorithms import load_signing_key

_ALGORITHMS: tuple[SignatureAlgorithm, ...] = (
    "ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512", "rsa-v1_5-sha256",
    "hmac-sha256",
)

_EPILOG = f"""\
By default the signature covers: {' '.join(DEFAULT_COVERED)}, leaving out content-digest
when there is no body and header fields not given with -H. With --covered, a listed header
that is not given is an error. Adds created and a random nonce (--no-nonce to omit).

example:
  sidecar sign --key keys/merchant-a.pem --keyid merchant-a-2026 \\
      -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \\
      --data @refund.json POST https://api.example.com/v1/payments/p-1/refunds
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "sign", help="print the signature headers for a request",
        description="Print the Content-Digest, Signature-Input and Signature headers a client "
                    "must send, one per line as 'Name: value'.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key", required=True, metavar="FILE",
                        help="PEM private key, or a file holding a base64 HMAC secret")
    parser.add_argument("--keyid", required=True, metavar="KID", help="the registered keyid")
    parser.add_argument("--alg", choices=_ALGORITHMS, default=None,
                        help="algorithm (default: from the key type; RSA -> rsa-pss-sha512)")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a header the request will carry (repeatable)")
    parser.add_argument("--data", metavar="@FILE|TEXT",
                        help="the body: @file, @- for stdin, or literal text (sent as is)")
    parser.add_argument("--no-nonce", action="store_true", help="omit the nonce parameter")
    parser.add_argument("--covered", metavar="LIST", default=None,
                        help="comma-separated components to cover instead of the default, "
                             "e.g. '@method,@target-uri,content-digest,content-type'")
    parser.add_argument("--label", default="sig1", help="signature label (default sig1)")
    parser.add_argument("--expires-in", type=int, default=None, metavar="SECONDS",
                        help="add expires = created + SECONDS")
    parser.add_argument("method", metavar="METHOD")
    parser.add_argument("url", metavar="URL", help="absolute, percent-encoded URL")
    parser.set_defaults(func=run)


def _read_body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        return Path(data[1:]).read_bytes()
    return data.encode("utf-8")


def _parse_headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, field_value = value.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise ValueError(f"header {value!r} must be 'Name: value'")
        if any(n.lower() == name.lower() for n in headers):
            raise ValueError(f"header {name!r} is given twice")
        headers[name] = field_value.strip(" \t")
    return headers


def run(args: argparse.Namespace) -> int:
    try:
        key, alg = load_signing_key(args.key, args.alg)
        headers = _parse_headers(args.header)
        body = _read_body(args.data)
        covered = None
        if args.covered is not None:
            covered = [c.strip() for c in args.covered.split(",") if c.strip()]
        signed = sign_request(
            args.method, args.url, headers, body, key=key, keyid=args.keyid, alg=alg,
            covered=covered, nonce=not args.no_nonce, label=args.label,
            expires_in=args.expires_in)
    except (OSError, ValueError) as exc:
        print(f"sidecar sign: error: {exc}", file=sys.stderr)
        return 1
    for name in ("Content-Digest", "Signature-Input", "Signature"):
        if name in signed:
            print(f"{name}: {signed[name]}")
    return 0
