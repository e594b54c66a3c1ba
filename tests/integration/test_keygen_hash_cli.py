"""``sidecar keygen`` and ``sidecar hash-secret`` as subprocesses (``python -m sidecar``)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from sidecar.config.auth import TokenEndpointConfig
from sidecar.issuer import load_signing_keys
from sidecar.secrets import verify_secret


def sidecar(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("alg", "jws_alg", "kty"), [("ed25519", "EdDSA", "OKP"),
                                                     ("es256", "ES256", "EC"),
                                                     ("rs256", "RS256", "RSA")])
def test_keygen_writes_a_private_key_a_public_key_and_a_jwk(
        tmp_path: Path, alg: str, jws_alg: str, kty: str) -> None:
    out = tmp_path / "keys"
    result = sidecar("keygen", "--alg", alg, "--kid", "k-2026", "--out", str(out))
    assert result.returncode == 0, result.stderr
    private, public, jwk_file = out / "k-2026.pem", out / "k-2026.pub.pem", out / "k-2026.jwk.json"
    assert result.stdout.split() == [str(private), str(public), str(jwk_file)]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = load_pem_private_key(private.read_bytes(), None)
    load_pem_public_key(public.read_bytes())
    jwk = json.loads(jwk_file.read_text())
    assert (jwk["kid"], jwk["alg"], jwk["kty"], jwk["use"]) == ("k-2026", jws_alg, kty, "sig")
    assert "d" not in jwk
    token = jwt.encode({"x": 1}, key, algorithm=jws_alg)  # type: ignore[arg-type]
    assert jwt.decode(token, jwt.PyJWK(jwk), algorithms=[jws_alg]) == {"x": 1}


def test_keygen_refuses_to_overwrite_and_bad_kids(tmp_path: Path) -> None:
    assert sidecar("keygen", "--alg", "es256", "--kid", "k", "--out", str(tmp_path)
                   ).returncode == 0
    again = sidecar("keygen", "--alg", "es256", "--kid", "k", "--out", str(tmp_path))
    assert again.returncode == 1 and "--force" in again.stderr
    assert sidecar("keygen", "--alg", "es256", "--kid", "k", "--out", str(tmp_path),
                   "--force").returncode == 0
    assert sidecar("keygen", "--alg", "es256", "--kid", "../evil", "--out", str(tmp_path)
                   ).returncode == 2
    assert sidecar("keygen", "--alg", "hs256", "--kid", "k", "--out", str(tmp_path)
                   ).returncode == 2
    assert not (tmp_path.parent / "evil.pem").exists()


def test_keygen_keys_load_as_token_endpoint_signing_keys(tmp_path: Path) -> None:
    for alg, kid in (("ed25519", "a"), ("es256", "b")):
        assert sidecar("keygen", "--alg", alg, "--kid", kid, "--out", str(tmp_path)
                       ).returncode == 0
    config = TokenEndpointConfig.model_validate({
        "issuer": "https://me/", "audience": "api",
        "signing_keys": [
            {"kid": "a", "alg": "EdDSA", "private_key_file": str(tmp_path / "a.pem")},
            {"kid": "b", "alg": "ES256", "private_key_file": str(tmp_path / "b.pem")}]})
    keys = load_signing_keys(config)
    assert [dict(k.public_jwk) for k in keys] == [
        json.loads((tmp_path / f"{kid}.jwk.json").read_text()) for kid in ("a", "b")]


def test_hash_secret_prints_one_verifiable_line() -> None:
    started = time.monotonic()
    result = sidecar("hash-secret", stdin="s3cret value\n")
    assert result.returncode == 0, result.stderr
    line, = result.stdout.splitlines()
    assert line.startswith("scrypt$16384$8$1$")
    assert verify_secret("s3cret value", line)
    assert not verify_secret("s3cret value\n", line)
    assert time.monotonic() - started < 30


def test_hash_secret_hashes_are_accepted_by_the_config() -> None:
    line = sidecar("hash-secret", "--n", "1024", stdin="x").stdout.strip()
    TokenEndpointConfig.model_validate({
        "issuer": "https://me/", "audience": "api",
        "signing_keys": [{"kid": "a", "alg": "EdDSA", "private_key_file": "a.pem"}],
        "clients": [{"client_id": "m", "secret_hash": line}]})


@pytest.mark.parametrize(("args", "stdin", "code"), [
    ((), "", 1), ((), "\n", 1), (("--n", "1000"), "x", 1), (("--n", "abc"), "x", 2),
])
def test_hash_secret_errors(args: tuple[str, ...], stdin: str, code: int) -> None:
    assert sidecar("hash-secret", *args, stdin=stdin).returncode == code
