"""Compile the configured keys into an immutable key ring (done once, when the stage is built).

Errors are reported like config errors, with the key's path, all at once:
``signatures.keys[2].public_key_file: cannot read keys/b.pem: No such file or directory``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sidecar.config.loader import ConfigError, ConfigIssue
from sidecar.config.signatures import (
    ResponseSigningConfig,
    SignaturesConfig,
    decode_hmac_secret,
)
from sidecar.signatures.algorithms import (
    KeyLoadError,
    SignKey,
    Verifier,
    VerifyKey,
    key_fits,
    load_public_jwk,
    load_public_pem,
    load_signing_key,
    verifier,
)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A registered client key: its algorithm is fixed here, never taken from a message."""

    keyid: str
    client_id: str
    alg: str
    key: VerifyKey
    _verify: Verifier = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_verify", verifier(self.alg, self.key))

    def verify(self, signature: bytes, base: bytes) -> bool:
        """True when ``signature`` is a valid signature of ``base`` under this key's
        configured algorithm (the check is specialised once, when the key is loaded)."""
        return self._verify(signature, base)

    def __repr__(self) -> str:  # never print key material
        return (f"VerificationKey(keyid={self.keyid!r}, client_id={self.client_id!r}, "
                f"alg={self.alg!r})")


@dataclass(frozen=True, slots=True)
class ResponseKey:
    keyid: str
    alg: str
    key: SignKey

    def __repr__(self) -> str:
        return f"ResponseKey(keyid={self.keyid!r}, alg={self.alg!r})"


KeyRing = Mapping[str, VerificationKey]


def _load_one(index: int,
              cfg: SignaturesConfig) -> tuple[VerificationKey | None, ConfigIssue | None]:
    key_cfg = cfg.keys[index]
    where = f"signatures.keys[{index}]"
    try:
        material: VerifyKey
        if key_cfg.secret is not None:
            where += ".secret"
            material = decode_hmac_secret(key_cfg.secret)
        elif key_cfg.jwk is not None:
            where += ".jwk"
            material = load_public_jwk(key_cfg.jwk, key_cfg.alg)
        else:
            assert key_cfg.public_key_file is not None
            where += ".public_key_file"
            material = load_public_pem(key_cfg.public_key_file, key_cfg.alg)
    except ValueError as exc:
        return None, ConfigIssue(where, str(exc))
    problem = key_fits(key_cfg.alg, material)
    if problem is not None:
        return None, ConfigIssue(where, f"does not fit alg {key_cfg.alg}: {problem}")
    return VerificationKey(key_cfg.keyid, key_cfg.client_id, key_cfg.alg, material), None


def load_keyring(cfg: SignaturesConfig) -> KeyRing:
    """Load every verification key.

    Raises:
        ConfigError: every key that cannot be loaded, each with its config path.
    """
    ring: dict[str, VerificationKey] = {}
    issues: list[ConfigIssue] = []
    for index in range(len(cfg.keys)):
        key, issue = _load_one(index, cfg)
        if issue is not None:
            issues.append(issue)
        elif key is not None:
            ring[key.keyid] = key
    if issues:
        raise ConfigError(issues)
    return MappingProxyType(ring)


def load_response_key(cfg: ResponseSigningConfig) -> ResponseKey:
    """Load the response-signing private key.

    Raises:
        ConfigError: unreadable, not a private key, or not fitting ``alg``.
    """
    try:
        key, alg = load_signing_key(cfg.private_key_file, cfg.alg)
    except KeyLoadError as exc:
        raise ConfigError([ConfigIssue("signatures.response.private_key_file", str(exc))]) from exc
    if isinstance(key, bytes):
        raise ConfigError([ConfigIssue("signatures.response.private_key_file",
                                       "response signing needs a private key, not a secret")])
    return ResponseKey(cfg.keyid, alg, key)


def key_issues(cfg: SignaturesConfig) -> list[ConfigIssue]:
    """Every key problem, for ``sidecar check`` (loads the files, like the stage will)."""
    issues: list[ConfigIssue] = []
    try:
        load_keyring(cfg)
    except ConfigError as exc:
        issues.extend(exc.issues)
    if cfg.response is not None:
        try:
            load_response_key(cfg.response)
        except ConfigError as exc:
            issues.extend(exc.issues)
    return issues
