"""The hash chain: canonical form, linking, keyed hashes and checkpoints."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from sidecar.audit.chain import GENESIS, Chain, canonical, checkpoint_mac, event_hash


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
    with pytest.raises(ValueError, match="Out of range float"):
        chain.seal({"x": float("nan")})
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
