"""The hash chain: canonical form, linking, keyed hashes and checkpoints."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.audit.chain import (
    GENESIS,
    Chain,
    canonical,
    canonical_stdlib,
    checkpoint_mac,
    event_hash,
    hash_matches,
)

# What events hold: strings (any code point but lone surrogates), 64-bit ints, booleans,
# null, millisecond figures rounded to 3 decimals, and nested objects and lists of those.
_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
            | st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
            | st.floats(0, 1e12, allow_nan=False).map(lambda f: round(f, 3)))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_events = st.dictionaries(st.text(max_size=12), _values, max_size=12)


def test_canonical_is_sorted_compact_utf8_without_hash() -> None:
    event = {"b": "é", "a": 1, "hash": "x"}
    assert canonical(event) == '{"a":1,"b":"é"}'.encode()


def test_seal_links_events_and_hash_covers_everything_but_itself() -> None:
    chain = Chain(b"", chain_id="0123456789abcdef-1")
    first: dict[str, object] = {"v": 1, "type": "request"}
    second: dict[str, object] = {"v": 1, "type": "request"}
    chain.seal(first)
    line = chain.seal(second)
    assert (first["seq"], first["prev"]) == (1, GENESIS)
    assert (second["seq"], second["prev"]) == (2, first["hash"])
    body = json.dumps({k: v for k, v in second.items() if k != "hash"}, sort_keys=True,
                      separators=(",", ":")).encode()
    assert second["hash"] == hashlib.sha256(body).hexdigest()
    assert chain.head == second["hash"]
    assert json.loads(line) == second
    assert line == body[:-1] + b',"hash":"' + str(second["hash"]).encode() + b'"}\n'


def test_keyed_chain_uses_hmac() -> None:
    event: dict[str, object] = {"v": 1}
    Chain(b"k3y").seal(event)
    assert event["hash"] == hmac.new(b"k3y", canonical(event), hashlib.sha256).hexdigest()
    assert event_hash(event, b"k3y") == event["hash"] != event_hash(event, b"")


def test_a_failed_seal_does_not_advance_the_chain() -> None:
    chain = Chain(b"")
    with pytest.raises(TypeError):
        chain.seal({"x": object()})
    with pytest.raises(TypeError):
        chain.seal({"x": 2**64})  # beyond 64 bits: orjson refuses rather than guess
    assert (chain.seq, chain.head) == (0, GENESIS)
    assert json.loads(chain.seal({"x": 1}))["seq"] == 1


def test_checkpoint_fields_carry_the_head_and_a_mac_when_keyed() -> None:
    chain = Chain(b"k", chain_id="0123456789abcdef-1")
    chain.seal({"v": 1})
    fields = chain.checkpoint_fields("count")
    assert fields == {"reason": "count", "head_seq": 1, "head_hash": chain.head,
                      "mac": checkpoint_mac(chain.chain_id, 1, chain.head, b"k")}
    assert "mac" not in Chain(b"").checkpoint_fields("shutdown")


def test_chain_ids_are_unique_per_writer() -> None:
    assert Chain(b"").chain_id != Chain(b"").chain_id


@given(_events)
def test_canonical_bytes_equal_the_stdlib_json_form_for_event_values(event: dict[str, object]
                                                                      ) -> None:
    # The documented canonical form is Python's json.dumps(sort_keys, compact, UTF-8);
    # the fast serialiser must produce the same bytes, or old and third-party checks break.
    assert canonical(event) == canonical_stdlib(event)


def test_a_line_hashed_in_the_stdlib_form_still_verifies() -> None:
    # Lines written by an earlier version (stdlib json) and floats whose exponent form
    # differs (1e+16 against 1e16) verify either way; any edit still fails.
    for key in (b"", b"k3y"):
        event: dict[str, object] = {"v": 1, "big": 1e16, "small": 1e-05}
        event["hash"] = hmac.new(key, canonical_stdlib(event), hashlib.sha256).hexdigest() \
            if key else hashlib.sha256(canonical_stdlib(event)).hexdigest()
        assert canonical(event) != canonical_stdlib(event)
        assert hash_matches(event, key)
        assert not hash_matches({**event, "big": 2e16}, key)
        assert not hash_matches({**event, "hash": "0" * 64}, key)
