"""Verification of audit files: hash chain, continuity across files, checkpoints.

Lines are read in the order given (rotated backups oldest first, then the current file) and
checked per chain (each writer process has its own chain, and several may interleave in one
file). The first broken link is reported with what most likely happened to it:

* ``edited``: a line's hash does not match its content, or it is re-hashed but no longer
  links to its predecessor (``prev``), or a checkpoint's head/mac is wrong;
* ``deleted``: seq numbers are missing and do not appear later;
* ``inserted``: a seq number appears again, or an extra copy of a later line appears early;
* ``reordered``: a missing seq number appears later;
* ``truncated``: events before a checkpoint are missing (its head does not match), or, with
  ``strict``, a chain does not start at seq 1 or does not end with a shutdown checkpoint;
* ``malformed``: a line is not an audit event.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sidecar.audit.chain import GENESIS, checkpoint_mac, hash_matches

Kind = Literal["edited", "deleted", "inserted", "reordered", "truncated", "malformed"]


@dataclass(frozen=True, slots=True)
class Line:
    file_index: int
    file: str
    lineno: int
    text: str


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link."""

    file: str
    line: int
    chain: str | None
    seq: int | None
    kind: Kind
    detail: str

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}"
        if self.chain is not None:
            where += f": chain {self.chain} seq {self.seq}"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass(slots=True)
class ChainSummary:
    chain: str
    first_seq: int
    last_seq: int = 0
    last_hash: str = GENESIS
    last_line: tuple[str, int] = ("", 0)
    events: int = 0
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    closed: bool = False
    """The last event is a ``shutdown`` checkpoint."""


@dataclass(slots=True)
class Report:
    files: int
    lines: int = 0
    chains: dict[str, ChainSummary] = field(default_factory=dict)
    broken: Break | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken is None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _parse(text: str) -> dict[str, Any] | None:
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    if not (isinstance(event.get("chain"), str) and type(event.get("seq")) is int
            and isinstance(event.get("prev"), str) and isinstance(event.get("hash"), str)):
        return None
    return event


def _find_ahead(later: Iterable[Line], chain: str, missing: int,
                current: int) -> tuple[bool, bool]:
    """Does ``missing`` appear later in ``chain``; does ``current`` appear again?"""
    found_missing = found_again = False
    for line in later:
        event = _parse(line.text)
        if event is None or event["chain"] != chain:
            continue
        if event["seq"] == missing:
            found_missing = True
        elif event["seq"] == current:
            found_again = True
        if found_missing and found_again:
            break
    return found_missing, found_again


def verify(lines: Iterable[Line], key: bytes, files: int,
           after: Callable[[Line], Iterable[Line]], strict: bool = False) -> Report:
    """Verify audit lines in order; ``after(line)`` yields the lines following ``line``
    (used once, to tell a deletion from a reordering)."""
    report = Report(files=files)
    chains = report.chains
    last_line: Line | None = None

    def broken(line: Line, chain: str | None, seq: int | None, kind: Kind,
               detail: str) -> Report:
        report.broken = Break(line.file, line.lineno, chain, seq, kind, detail)
        return report

    for line in lines:
        last_line = line
        report.lines += 1
        event = _parse(line.text)
        if event is None:
            return broken(line, None, None, "malformed", "not an audit event (JSON object with "
                          "chain, seq, prev and hash)")
        chain, seq = event["chain"], event["seq"]
        st = chains.get(chain)
        if not hash_matches(event, key):
            hint = ("" if st is not None else
                    " (or the wrong key: use --key-env when audit.chain_key is set)")
            return broken(line, chain, seq, "edited",
                          f"the hash does not match the line's content{hint}")
        if st is None:
            if seq == 1 and event["prev"] != GENESIS:
                return broken(line, chain, seq, "edited", "seq 1 does not start the chain")
            if seq != 1:
                report.warnings.append(f"chain {chain} starts at seq {seq} (earlier events "
                                       "are in files not given)")
            st = chains[chain] = ChainSummary(chain, first_seq=seq)
        else:
            expected = st.last_seq + 1
            if seq > expected:
                found_missing, found_again = _find_ahead(after(line), chain, expected, seq)
                if event.get("type") == "checkpoint" and not found_missing:
                    return broken(line, chain, seq, "truncated",
                                  f"{seq - expected} event(s) before this checkpoint are "
                                  f"missing (head_seq {event.get('head_seq')}, last seen seq "
                                  f"{st.last_seq})")
                if found_missing and found_again:
                    return broken(line, chain, seq, "inserted",
                                  f"a copy of seq {seq} appears before seq {expected}")
                if found_missing:
                    return broken(line, chain, seq, "reordered",
                                  f"seq {seq} appears before seq {expected}")
                missing = (f"seq {expected}" if seq == expected + 1
                           else f"seq {expected}-{seq - 1}")
                return broken(line, chain, seq, "deleted", f"{missing} missing")
            if seq < expected:
                return broken(line, chain, seq, "inserted",
                              f"seq {seq} already appeared (last seq was {st.last_seq})")
            if event["prev"] != st.last_hash:
                return broken(line, chain, seq, "edited",
                              f"prev does not match the hash of seq {st.last_seq} (line "
                              f"{st.last_line[1]} of {st.last_line[0]}): that line was "
                              "altered and re-hashed")
        if event.get("type") == "checkpoint":
            problem = _checkpoint_problem(event, key)
            if problem:
                return broken(line, chain, seq, "truncated" if "head" in problem else "edited",
                              problem)
            st.checkpoints += 1
            st.last_checkpoint_seq = seq
            st.closed = event.get("reason") == "shutdown"
        else:
            st.closed = False
        st.last_seq, st.last_hash = seq, event["hash"]
        st.last_line = (line.file, line.lineno)
        st.events += 1

    for st in chains.values():
        unanchored = st.last_seq - st.last_checkpoint_seq
        if unanchored and st.last_checkpoint_seq:
            report.warnings.append(f"chain {st.chain}: {unanchored} event(s) after its last "
                                   f"checkpoint (seq {st.last_checkpoint_seq})")
        elif unanchored:
            report.warnings.append(f"chain {st.chain}: no checkpoint")
        if strict and last_line is not None and (st.first_seq != 1 or not st.closed):
            why = (f"starts at seq {st.first_seq}" if st.first_seq != 1
                   else f"does not end with a shutdown checkpoint (last seq {st.last_seq})")
            report.broken = Break(st.last_line[0], st.last_line[1], st.chain, st.last_seq,
                                  "truncated", f"strict: the chain {why}")
            return report
    return report


def _checkpoint_problem(event: dict[str, Any], key: bytes) -> str | None:
    seq, prev = event["seq"], event["prev"]
    if event.get("head_seq") != seq - 1 or event.get("head_hash") != prev:
        return (f"checkpoint head (seq {event.get('head_seq')}) does not match the chain "
                f"(seq {seq - 1})")
    if key:
        mac = event.get("mac")
        want = checkpoint_mac(event["chain"], seq - 1, prev, key)
        if not isinstance(mac, str) or not _same(mac, want):
            return "checkpoint mac does not match (wrong key, or forged)"
    return None


class FileLines:
    """The lines of several files in order, re-readable from any position."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __iter__(self) -> Iterator[Line]:
        return self._from(0, 0)

    def after(self, line: Line) -> Iterator[Line]:
        return self._from(line.file_index, line.lineno)

    def _from(self, file_index: int, skip: int) -> Iterator[Line]:
        for i in range(file_index, len(self.paths)):
            path = self.paths[i]
            with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
                for lineno, text in enumerate(f, 1):
                    if i == file_index and lineno <= skip:
                        continue
                    yield Line(i, str(path), lineno, text.rstrip("\n"))


def verify_files(paths: Sequence[str | Path], key: bytes, strict: bool = False) -> Report:
    """Verify files in order (oldest rotated backup first). Raises OSError."""
    lines = FileLines(paths)
    return verify(lines, key, len(paths), lines.after, strict)
