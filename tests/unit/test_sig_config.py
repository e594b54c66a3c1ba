"""The `signatures` config section: defaults, shape validation, cross-checks, key loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import sidecar.signatures.checks  # noqa: F401  (registers the cross-checks)
from sidecar.config import ConfigError, parse_text
from sidecar.config.models import SidecarConfig
from sidecar.config.signatures import (
    DEFAULT_COVERED,
    SignaturesConfig,
    compile_covered,
    effective_nonce_store,
)
from sidecar.signatures.components import ComponentId
from sidecar.signatures.keys import key_issues, load_keyring, load_response_key
from tests.fixtures.sigkeys import RFC_ED25519_JWK, RFC_SHARED_SECRET_B64, SigKeys


def errors(yaml_text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_text(yaml_text, env={})
    return [str(issue) for issue in info.value.issues]


def test_defaults_follow_the_spec() -> None:
    cfg = SignaturesConfig()
    assert cfg.covered == DEFAULT_COVERED
    assert cfg.algorithms == ("ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512",
                              "rsa-v1_5-sha256", "hmac-sha256")
    assert (cfg.max_age, cfg.clock_skew, cfg.require_nonce, cfg.required) == (300, 30, True,
                                                                             False)
    assert cfg.nonce_ttl() == 330
    assert cfg.compiled_covered[0] == ComponentId("@method")


@pytest.mark.parametrize(("covered", "message"), [
    (["@target-uri"], "must include @method"),
    (["@method"], "must include @target-uri, or both @authority and @path"),
    (["@method", "@authority"], "must include @target-uri, or both @authority and @path"),
    (["@method", "@target-uri", "@status"], "cannot be required of a request"),
    (["@method", "@target-uri", "@nope"], "unknown derived component"),
    (["@method", "@target-uri", "Content-Type"], "lowercase HTTP field name"),
    (["@method", "@target-uri", "date", "date"], "listed twice"),
    (["@method", "@target-uri", "@query-param"], "needs a name parameter"),
    (["@method", "@target-uri", '"date";req'], "not allowed here"),
    (["@method", "@target-uri", '"date'], "not a valid component identifier"),
], ids=["no method", "no target", "authority without path", "status", "unknown derived",
        "uppercase field", "duplicate", "query-param without name", "req", "bad quoting"])
def test_covered_is_validated(covered: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_covered(tuple(covered))


def test_covered_accepts_authority_and_path_and_parameterised_entries() -> None:
    components = compile_covered(("@method", "@authority", "@path",
                                  '"@query-param";name="id"', '"example-dict";key="a"'))
    assert components[3] == ComponentId("@query-param", (("name", "id"),))


def test_every_error_is_reported_with_its_path() -> None:
    found = errors("""
signatures:
  algorithms: [ed25519, rsa-sha1]
  max_age: 0s
  clock_skew: 1h
  nonce_store: disk
  keys:
    - {keyid: a, client_id: c, alg: ed25519}
    - {keyid: b, client_id: c, alg: ed25519, public_key_file: x.pem, secret: abc}
    - {keyid: h, client_id: c, alg: hmac-sha256, secret: c2hvcnQ=}
    - {keyid: k, client_id: c, alg: ed25519, secret: c2hvcnQ=}
    - {keyid: r, client_id: c, alg: rsa-pss-sha512, jwk: {kty: OKP, crv: Ed25519, x: abc}}
    - {keyid: d, client_id: c, alg: ed25519, jwk: {kty: OKP, crv: Ed25519, x: a, d: b}}
    - {keyid: "", client_id: c, alg: ed25519, public_key_file: x.pem}
  response: {keyid: r, alg: hmac-sha256, private_key_file: r.pem}
""")
    joined = "\n".join(found)
    for expected in [
        "signatures.algorithms",
        "signatures.max_age: must be positive",
        "signatures.clock_skew: must be between 0s and 10m",
        "signatures.nonce_store",
        "signatures.keys[0]: give exactly one of public_key_file, jwk or secret",
        "signatures.keys[1]: give exactly one of public_key_file, jwk or secret (got "
        "public_key_file, secret)",
        "signatures.keys[2]: secret must decode to at least 32 bytes",
        "signatures.keys[3]: secret is only for hmac-sha256",
        "signatures.keys[4]: jwk does not fit alg rsa-pss-sha512",
        "signatures.keys[5]: jwk must be a public key (remove d)",
        "signatures.keys[6].keyid: must be non-empty printable ASCII",
        "signatures.response.alg",
    ]:
        assert expected in joined, f"{expected!r} not in\n{joined}"
    assert all("(line " in issue for issue in found)


def test_duplicate_keyid_and_alg_outside_the_allow_list() -> None:
    secret = RFC_SHARED_SECRET_B64
    assert errors(f"""
signatures:
  keys:
    - {{keyid: a, client_id: c, alg: hmac-sha256, secret: "{secret}"}}
    - {{keyid: a, client_id: d, alg: hmac-sha256, secret: "{secret}"}}
""") == ["signatures.keys: [1].keyid: 'a' is listed twice (line 3)"]
    assert errors("""
signatures:
  algorithms: [ed25519]
  keys:
    - {keyid: a, client_id: c, alg: ecdsa-p384-sha384, public_key_file: k.pem}
""") == ["signatures.keys: [0].alg: ecdsa-p384-sha384 is not in signatures.algorithms (line 4)"]


def test_unknown_keys_are_errors() -> None:
    assert errors("signatures: {requred: true}\n") == [
        "signatures.requred: unknown key (not part of the config schema) (line 1)"]


@pytest.mark.parametrize(("yaml_text", "store"), [
    ("signatures: {}\n", "memory"),
    ("signatures: {}\nredis: {}\n", "redis"),
    ("signatures: {nonce_store: memory}\nredis: {}\n", "memory"),
])
def test_nonce_store_defaults_to_redis_when_a_redis_section_exists(yaml_text: str,
                                                                  store: str) -> None:
    assert effective_nonce_store(parse_text(yaml_text, env={}).config) == store


def test_redis_nonce_store_needs_the_redis_section() -> None:
    assert errors("signatures: {nonce_store: redis}\n") == [
        "signatures.nonce_store: redis needs the top-level redis section (line 1)"]


def test_warnings() -> None:
    loaded = parse_text("server: {workers: 2}\nsignatures: {required: true, "
                        "require_nonce: false}\n", env={})
    messages = [issue.message for issue in loaded.warnings]
    assert len(messages) == 3
    assert all(m.startswith("warning:") for m in messages)


def test_no_signatures_section_is_fine() -> None:
    assert parse_text("{}", env={}).config.signatures is None
    assert effective_nonce_store(SidecarConfig()) == "memory"


def test_secret_comes_from_the_environment() -> None:
    loaded = parse_text(
        "signatures:\n  keys:\n    - {keyid: h, client_id: c, alg: hmac-sha256, "
        "secret: '${HMAC_B64}'}\n", env={"HMAC_B64": RFC_SHARED_SECRET_B64})
    assert loaded.config.signatures is not None
    ring = load_keyring(loaded.config.signatures)
    assert ring["h"].alg == "hmac-sha256" and "secret" not in repr(ring["h"])


def _cfg(keys: list[dict[str, Any]], response: dict[str, Any] | None = None) -> SignaturesConfig:
    return SignaturesConfig.model_validate({
        "algorithms": ["ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512",
                       "rsa-v1_5-sha256", "hmac-sha256"],
        "keys": keys, "response": response})


def test_keys_are_loaded_with_their_config_paths_in_errors(sigkeys: SigKeys,
                                                           tmp_path: Path) -> None:
    ed = sigkeys.make("cfg-ed", "ed25519")
    p256 = sigkeys.make("cfg-p256", "ecdsa-p256-sha256")
    (tmp_path / "junk.pem").write_text("not a key")
    cfg = _cfg([
        {"keyid": "ok", "client_id": "c", "alg": "ed25519", "public_key_file": str(ed.public_pem)},
        {"keyid": "gone", "client_id": "c", "alg": "ed25519",
         "public_key_file": str(tmp_path / "missing.pem")},
        {"keyid": "junk", "client_id": "c", "alg": "ed25519",
         "public_key_file": str(tmp_path / "junk.pem")},
        {"keyid": "wrong-type", "client_id": "c", "alg": "ed25519",
         "public_key_file": str(p256.public_pem)},
        {"keyid": "wrong-curve", "client_id": "c", "alg": "ecdsa-p384-sha384",
         "public_key_file": str(p256.public_pem)},
        {"keyid": "bad-jwk", "client_id": "c", "alg": "ed25519",
         "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}},
        {"keyid": "jwk", "client_id": "c", "alg": "ed25519", "jwk": RFC_ED25519_JWK},
    ])
    with pytest.raises(ConfigError) as info:
        load_keyring(cfg)
    found = [str(issue) for issue in info.value.issues]
    assert [f.split(":")[0] for f in found] == [
        "signatures.keys[1].public_key_file", "signatures.keys[2].public_key_file",
        "signatures.keys[3].public_key_file", "signatures.keys[4].public_key_file",
        "signatures.keys[5].jwk"]
    assert "cannot read" in found[0] and "No such file" in found[0]
    assert "not a PEM public key" in found[1]
    assert "needs an Ed25519 key" in found[2]
    assert "secp384r1" in found[3]


def test_rsa_keys_below_2048_bits_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    (tmp_path / "small.pub.pem").write_bytes(small.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    issues = key_issues(_cfg([{"keyid": "s", "client_id": "c", "alg": "rsa-v1_5-sha256",
                               "public_key_file": str(tmp_path / "small.pub.pem")}]))
    assert len(issues) == 1 and "2048+" in issues[0].message


def test_response_key(sigkeys: SigKeys) -> None:
    ed = sigkeys.make("resp-ed", "ed25519")
    key = load_response_key(_cfg([], {"keyid": "resp", "alg": "ed25519",
                                      "private_key_file": str(ed.private_pem)}).response)  # type: ignore[arg-type]
    assert (key.keyid, key.alg) == ("resp", "ed25519")
    issues = key_issues(_cfg([], {"keyid": "resp", "alg": "ed25519",
                                  "private_key_file": str(ed.public_pem)}))
    assert [i.path for i in issues] == ["signatures.response.private_key_file"]
    issues = key_issues(_cfg([], {"keyid": "resp", "alg": "ecdsa-p256-sha256",
                                  "private_key_file": str(ed.private_pem)}))
    assert "does not fit alg ecdsa-p256-sha256" in issues[0].message
