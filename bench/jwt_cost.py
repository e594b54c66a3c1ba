"""Micro-benchmark: what one bearer token costs JWTAuthenticator, uncached and cached.

    python bench/jwt_cost.py [--n 2000]

Per algorithm (RS256 2048-bit, ES256, EdDSA) it prints, in microseconds per token:

- ``pyjwt``: bare ``jwt.decode`` with a prepared key (reference);
- ``uncached``: ``authenticate()`` with the verified-token cache disabled (extraction,
  SHA-256, parsing, header checks, signature, claims, identity);
- ``cached``: ``authenticate()`` of a token already in the cache;
- ``is_cached``: the cheap check the rate limiter calls.

Keys come from a local ``jwks_file`` so no network is involved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from sidecar.authn import JWTAuthenticator
from sidecar.config.auth import AuthConfig
from sidecar.metrics import Metrics

ISSUER, AUDIENCE = "https://idp.bench/", "payments-api"


def _keys() -> dict[str, tuple[Any, dict[str, Any]]]:
    out: dict[str, tuple[Any, dict[str, Any]]] = {}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    for alg, key, algo in (("RS256", rsa_key, RSAAlgorithm), ("ES256", ec_key, ECAlgorithm),
                           ("EdDSA", ed_key, OKPAlgorithm)):
        jwk = {**algo.to_jwk(key.public_key(), as_dict=True), "kid": alg, "alg": alg}
        out[alg] = (key, jwk)
    return out


def _token(key: Any, alg: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600,
              "client_id": "merchant-a", "sub": "merchant-a", "jti": "j",
              "scope": "payments:read payments:write"}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": alg})


async def _per_call_us(call: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(min(200, n)):
        await call()
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - started) / n * 1e6


async def main(n: int) -> None:
    keys = _keys()
    with tempfile.TemporaryDirectory() as tmp:
        jwks_file = Path(tmp) / "jwks.json"
        jwks_file.write_text(json.dumps({"keys": [jwk for _, jwk in keys.values()]}))
        config = AuthConfig.model_validate({"issuers": [{
            "name": "bench", "issuer": ISSUER, "audiences": [AUDIENCE],
            "jwks_file": str(jwks_file), "algorithms": list(keys)}]})

        def emit(event_type: str, fields: Any) -> None:
            return None

        uncached = JWTAuthenticator(config, Metrics(), emit, cache_size=0)
        cached = JWTAuthenticator(config, Metrics(), emit)
        await uncached.start()
        await cached.start()
        try:
            print(f"{'alg':<6} {'pyjwt':>9} {'uncached':>9} {'cached':>9} {'is_cached':>10}"
                  "   (µs per token)")
            for alg, (key, jwk) in keys.items():
                token = _token(key, alg)
                header = [f"Bearer {token}"]
                public = jwt.PyJWK(jwk)

                async def bare(token: str = token, public: Any = public) -> Any:
                    return jwt.decode(token, public, algorithms=[public.algorithm_name],
                                      audience=AUDIENCE, issuer=ISSUER)

                async def check(header: list[str] = header) -> bool:
                    return cached.is_cached(header)

                rows = [await _per_call_us(bare, n),
                        await _per_call_us(lambda h=header: uncached.authenticate(h, None), n),
                        await _per_call_us(lambda h=header: cached.authenticate(h, None), n * 10),
                        await _per_call_us(check, n * 10)]
                print(f"{alg:<6} {rows[0]:>9.1f} {rows[1]:>9.1f} {rows[2]:>9.2f} {rows[3]:>10.2f}")
        finally:
            await uncached.close()
            await cached.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="tokens per uncached measurement")
    asyncio.run(main(parser.parse_args().n))
