"""Model of the `signatures` section: HTTP message signatures (RFC 9421) and digests.

Shape is validated here, at load; key files are read when the stage is built
(:func:`sidecar.signatures.keys.load_keyring`), which reports problems with the key's
config path (``signatures.keys[2].public_key_file: ...``) the same way.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationInfo, field_validator, model_validator

from sidecar.config.types import Duration, StrictModel
from sidecar.signatures.components import (
    DERIVED_REQUEST_COMPONENTS,
    ComponentId,
    parse_component_id,
)

if TYPE_CHECKING:
    from sidecar.config.models import SidecarConfig

SignatureAlgorithm = Literal[
    "ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512", "rsa-v1_5-sha256",
    "hmac-sha256",
]
"""The closed set of RFC 9421 §3.3 algorithms the sidecar implements."""

AsymmetricAlgorithm = Literal[
    "ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512", "rsa-v1_5-sha256",
]

DEFAULT_COVERED: tuple[str, ...] = (
    "@method", "@target-uri", "content-digest", "content-type", "authorization",
)
DEFAULT_ALGORITHMS: tuple[SignatureAlgorithm, ...] = (
    "ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512", "rsa-v1_5-sha256", "hmac-sha256",
)
MIN_HMAC_SECRET_BYTES = 32
"""An HMAC-SHA256 key shorter than the hash output weakens it (RFC 2104 §3)."""

# JWK kty/crv each algorithm accepts (RFC 7518 §6, RFC 8037).
_JWK_SHAPES: dict[str, tuple[str, str | None]] = {
    "ed25519": ("OKP", "Ed25519"),
    "ecdsa-p256-sha256": ("EC", "P-256"),
    "ecdsa-p384-sha384": ("EC", "P-384"),
    "rsa-pss-sha512": ("RSA", None),
    "rsa-v1_5-sha256": ("RSA", None),
}
_JWK_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_JWK_PUBLIC_MEMBERS = {"OKP": ("x",), "EC": ("x", "y"), "RSA": ("n", "e")}


def decode_hmac_secret(value: str) -> bytes:
    """Decode a base64 HMAC secret (standard or URL-safe alphabet, padding optional).

    Raises:
        ValueError: not base64, or shorter than 32 bytes.
    """
    text = value.strip()
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        else:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("secret must be base64") from exc
    if len(raw) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(f"secret must decode to at least {MIN_HMAC_SECRET_BYTES} bytes")
    return raw


def _check_keyid(value: str) -> str:
    # keyid travels as an sf-string: printable ASCII only (RFC 8941 §3.3.3).
    if not value or not all(32 <= ord(c) < 127 for c in value):
        raise ValueError("must be non-empty printable ASCII")
    return value


class SignatureKeyConfig(StrictModel):
    """A client's verification key. Exactly one of ``public_key_file``, ``jwk``, ``secret``."""

    keyid: str
    """The ``keyid`` signature parameter that selects this key."""
    client_id: str
    """The client whose token must accompany signatures by this key."""
    alg: SignatureAlgorithm
    """Fixed per key; a signature whose ``alg`` parameter says otherwise is rejected."""
    public_key_file: str | None = None
    """PEM (SPKI) public key; for the asymmetric algorithms."""
    jwk: dict[str, Any] | None = None
    """A public JWK (no private members); for the asymmetric algorithms."""
    secret: str | None = None
    """Base64 key bytes for ``hmac-sha256`` (use ``${ENV}`` so it is not in the file)."""

    @field_validator("keyid")
    @classmethod
    def _keyid(cls, value: str) -> str:
        return _check_keyid(value)

    @model_validator(mode="after")
    def _one_source(self) -> SignatureKeyConfig:
        sources = [n for n in ("public_key_file", "jwk", "secret") if getattr(self, n) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of public_key_file, jwk or secret"
                             + (f" (got {', '.join(sources)})" if sources else ""))
        if self.alg == "hmac-sha256":
            if self.secret is None:
                raise ValueError("alg hmac-sha256 needs secret (base64), not a public key")
            decode_hmac_secret(self.secret)
        elif self.secret is not None:
            raise ValueError(f"secret is only for hmac-sha256; alg {self.alg} needs a public key")
        if self.jwk is not None:
            _check_jwk(self.jwk, self.alg)
        return self


def _check_jwk(jwk: dict[str, Any], alg: str) -> None:
    private = sorted(_JWK_PRIVATE_MEMBERS & jwk.keys())
    if private:
        raise ValueError(f"jwk must be a public key (remove {', '.join(private)})")
    kty, crv = _JWK_SHAPES[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        want = f"kty {kty}" + (f", crv {crv}" if crv else "")
        raise ValueError(f"jwk does not fit alg {alg} (needs {want})")
    for member in _JWK_PUBLIC_MEMBERS[kty]:
        if not isinstance(jwk.get(member), str):
            raise ValueError(f"jwk is missing {member!r}")
    if "alg" in jwk and isinstance(jwk["alg"], str) and jwk["alg"] not in _jwk_algs(alg):
        raise ValueError(f"jwk alg {jwk['alg']!r} contradicts alg {alg}")


def _jwk_algs(alg: str) -> frozenset[str]:
    return {
        "ed25519": frozenset({"EdDSA", "Ed25519"}),
        "ecdsa-p256-sha256": frozenset({"ES256"}),
        "ecdsa-p384-sha384": frozenset({"ES384"}),
        "rsa-pss-sha512": frozenset({"PS512"}),
        "rsa-v1_5-sha256": frozenset({"RS256"}),
    }[alg]


class ResponseSigningConfig(StrictModel):
    """Sign every response with the sidecar's own key (label ``sidecar``)."""

    keyid: str
    alg: AsymmetricAlgorithm
    private_key_file: str

    @field_validator("keyid")
    @classmethod
    def _keyid(cls, value: str) -> str:
        return _check_keyid(value)


def compile_covered(entries: tuple[str, ...]) -> tuple[ComponentId, ...]:
    """Parse ``covered`` entries into component identifiers.

    Raises:
        ValueError: an entry is malformed, not applicable to a request, duplicated, or the
            list misses ``@method`` or both of ``@target-uri`` / (``@authority`` + ``@path``).
    """
    components: list[ComponentId] = []
    seen: set[tuple[str, frozenset[tuple[str, Any]]]] = set()
    for entry in entries:
        component = parse_component_id(entry)
        if component.is_derived:
            if component.name not in DERIVED_REQUEST_COMPONENTS:
                raise ValueError(f"{entry!r} cannot be required of a request")
            allowed = {"name"} if component.name == "@query-param" else set()
            if component.name == "@query-param" and not isinstance(component.param("name"), str):
                raise ValueError(f'{entry!r} needs a name parameter: "@query-param";name="id"')
        else:
            allowed = {"sf", "key", "bs"}
        extra = {key for key, _ in component.params} - allowed
        if extra:
            raise ValueError(f"{entry!r}: parameter(s) {', '.join(sorted(extra))} not allowed here")
        if component.identity in seen:
            raise ValueError(f"{entry!r} is listed twice")
        seen.add(component.identity)
        components.append(component)
    plain = {c.name for c in components if not c.params}
    if "@method" not in plain:
        raise ValueError("must include @method")
    if "@target-uri" not in plain and not {"@authority", "@path"} <= plain:
        raise ValueError("must include @target-uri, or both @authority and @path")
    return tuple(components)


class SignaturesConfig(StrictModel):
    """RFC 9421 request signatures, RFC 9530 digests, replay protection, response signing."""

    required: bool = False
    """Require a signature on every non-public route (a rule may set ``signature: required``)."""
    covered: tuple[str, ...] = DEFAULT_COVERED
    """Components every accepted signature must cover, at least. ``content-digest`` only when
    the request has a body; other header fields only when the request carries them."""
    algorithms: tuple[SignatureAlgorithm, ...] = DEFAULT_ALGORITHMS
    """Allow-list; every key's ``alg`` must be in it."""
    max_age: Duration = 300.0
    """Oldest ``created`` accepted."""
    clock_skew: Duration = 30.0
    """How far ``created`` may be in the future (and ``expires`` in the past)."""
    require_nonce: bool = True
    """Every signature must carry a ``nonce``; nonces are remembered for max_age + clock_skew."""
    nonce_store: Literal["memory", "redis"] | None = None
    """``memory`` (one process) or ``redis`` (shared); default redis when a redis section exists."""
    keys: tuple[SignatureKeyConfig, ...] = ()
    response: ResponseSigningConfig | None = None

    @field_validator("covered")
    @classmethod
    def _covered(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        compile_covered(value)
        return value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one algorithm")
        if len(set(value)) != len(value):
            raise ValueError("lists an algorithm twice")
        return value

    @field_validator("max_age")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("clock_skew")
    @classmethod
    def _skew(cls, value: float) -> float:
        if value < 0 or value > 600:
            raise ValueError("must be between 0s and 10m")
        return value

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: tuple[SignatureKeyConfig, ...],
              info: ValidationInfo) -> tuple[SignatureKeyConfig, ...]:
        seen: set[str] = set()
        allowed = set(info.data.get("algorithms") or ())
        for i, key in enumerate(value):
            if key.keyid in seen:
                raise ValueError(f"[{i}].keyid: {key.keyid!r} is listed twice")
            seen.add(key.keyid)
            if allowed and key.alg not in allowed:
                raise ValueError(f"[{i}].alg: {key.alg} is not in signatures.algorithms")
        return value

    @property
    def compiled_covered(self) -> tuple[ComponentId, ...]:
        return compile_covered(self.covered)

    def nonce_ttl(self) -> float:
        """How long a nonce is remembered: as long as its signature could be accepted."""
        return self.max_age + self.clock_skew


def effective_nonce_store(config: SidecarConfig) -> Literal["memory", "redis"]:
    """The nonce store in use: as configured, else redis when a redis section exists."""
    sig = config.signatures
    if sig is not None and sig.nonce_store is not None:
        return sig.nonce_store
    return "redis" if config.redis is not None else "memory"
