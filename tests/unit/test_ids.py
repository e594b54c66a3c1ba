"""Random ids: format, no repeats, and a forked child never reuses the parent's batch."""

from __future__ import annotations

import os
import re

from sidecar.ids import random_id


def test_ids_are_32_hex_digits_and_do_not_repeat() -> None:
    ids = [random_id() for _ in range(5000)]  # crosses many refills
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_fresh_ids() -> None:
    random_id()  # the parent now holds a partly used batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the next id and leave at once
        os.write(write, random_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent_next = [random_id() for _ in range(256)]
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child not in parent_next
