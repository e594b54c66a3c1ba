"""scrypt client-secret hashes (sidecar.secrets)."""

from __future__ import annotations

import pytest

from sidecar.secrets import (
    DUMMY_HASH,
    hash_secret,
    parse_secret_hash,
    verify_secret,
)


def test_a_hash_verifies_its_secret_and_nothing_else() -> None:
    stored = hash_secret("correct horse", n=2**10)
    assert verify_secret("correct horse", stored)
    assert not verify_secret("correct horsf", stored)
    assert not verify_secret("", stored)
    assert not verify_secret("correct horse", DUMMY_HASH)


def test_the_format_carries_its_parameters_and_a_random_salt() -> None:
    first, second = hash_secret("s", n=2**10, r=4, p=2), hash_secret("s", n=2**10, r=4, p=2)
    assert first.startswith("scrypt$1024$4$2$") and first != second
    parsed = parse_secret_hash(first)
    assert (parsed.n, parsed.r, parsed.p, len(parsed.salt), len(parsed.hash)) == (1024, 4, 2,
                                                                                  16, 32)
    assert parsed.encode() == first
    assert "hash=" not in repr(parsed) and parsed.hash.hex() not in repr(parsed)


def test_the_default_cost_is_n_2_14_r_8_p_1() -> None:
    assert hash_secret("s").startswith("scrypt$16384$8$1$")


def test_padded_base64_is_accepted_when_parsing() -> None:
    stored = hash_secret("s", n=2**10)
    head, salt, digest = stored.rsplit("$", 2)
    padded = f"{head}${salt}{'=' * (-len(salt) % 4)}${digest}{'=' * (-len(digest) % 4)}"
    assert verify_secret("s", padded)


@pytest.mark.parametrize(("text", "message"), [
    ("", "must be scrypt$N$r$p"),
    ("bcrypt$1024$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "must be scrypt$N$r$p"),
    ("scrypt$1024$8$1$AAAAAAAAAAA", "must be scrypt$N$r$p"),
    ("scrypt$x$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "decimal integers"),
    ("scrypt$1000$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "power of two"),
    ("scrypt$512$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "power of two"),
    ("scrypt$4194304$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "power of two"),
    ("scrypt$1024$0$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "r must be"),
    ("scrypt$1024$8$99$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "p must be"),
    ("scrypt$1024$8$1$!!!!$AAAAAAAAAAAAAAAAAAAAAA", "salt is not base64"),
    ("scrypt$1024$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA", "salt must be at least"),
    ("scrypt$1024$8$1$AAAAAAAAAAA$AAAA", "hash must be"),
])
def test_malformed_hashes_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        parse_secret_hash(text)


def test_empty_secrets_cannot_be_hashed() -> None:
    with pytest.raises(ValueError):
        hash_secret("")
