"""``sidecar keygen``: a signing key pair as PEM files plus the public JWK."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

_KID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_JWS_ALG = {"ed25519": "EdDSA", "es256": "ES256", "rs256": "RS256"}

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "keygen", help="generate a signing key pair and its public JWK",
        description="Write DIR/KID.pem (private, mode 0600), DIR/KID.pub.pem and "
                    "DIR/KID.jwk.json (public JWK with kid, alg and use=sig).")
    parser.add_argument("--alg", required=True, choices=sorted(_JWS_ALG),
                        help="ed25519 (JWS EdDSA), es256 (P-256) or rs256 (RSA)")
    parser.add_argument("--kid", required=True, help="key id: letters, digits, '.', '_', '-'")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--rsa-bits", type=int, default=3072, choices=(2048, 3072, 4096),
                        help="RSA modulus size for rs256 (default 3072)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.set_defaults(func=run)


def generate(alg: str, rsa_bits: int = 3072) -> PrivateKey:
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "es256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)


def public_jwk(key: PrivateKey, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK of ``key`` with ``kid``, JWS ``alg`` and ``use: sig``."""
    public = key.public_key()
    jwk: dict[str, Any]
    if isinstance(public, ed25519.Ed25519PublicKey):
        jwk = dict(OKPAlgorithm.to_jwk(public, as_dict=True))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = dict(ECAlgorithm.to_jwk(public, as_dict=True))
    else:
        jwk = dict(RSAAlgorithm.to_jwk(public, as_dict=True))
    jwk.update(kid=kid, alg=_JWS_ALG[alg], use="sig")
    return jwk


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # O_CREAT's mode is masked by umask and ignored for existing files


def key_files(alg: str, kid: str, out: Path, rsa_bits: int = 3072
              ) -> list[tuple[Path, bytes, int]]:
    """The three files of a new key pair: (path, content, mode), nothing written yet."""
    key = generate(alg, rsa_bits)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = json.dumps(public_jwk(key, kid, alg), indent=2).encode() + b"\n"
    return [(out / f"{kid}.pem", private_pem, 0o600),
            (out / f"{kid}.pub.pem", public_pem, 0o644),
            (out / f"{kid}.jwk.json", jwk, 0o644)]


def write_key_files(files: list[tuple[Path, bytes, int]], force: bool = False) -> None:
    for path, data, mode in files:
        _write(path, data, mode, force)


def run(args: argparse.Namespace) -> int:
    if not _KID_RE.match(args.kid):
        print("keygen: --kid must be 1-128 letters, digits, '.', '_' or '-'", file=sys.stderr)
        return 2
    out = Path(args.out)
    files = key_files(args.alg, args.kid, out, args.rsa_bits)
    try:
        out.mkdir(parents=True, exist_ok=True)
        existing = [str(p) for p, _, _ in files if p.exists()]
        if existing and not args.force:
            print(f"keygen: {', '.join(existing)} already exist(s); use --force to overwrite",
                  file=sys.stderr)
            return 1
        write_key_files(files, args.force)
    except OSError as exc:
        print(f"keygen: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    for path, _, _ in files:
        print(path)
    return 0
