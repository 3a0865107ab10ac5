"""processor.analysis.worker: a released batch reaches the worker whole, by memory file or through the pipe."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading

import pyarrow as pa
import pytest

from processor.analysis import worker
from processor.receivers.decode import decode
from processor.tools.bench import MARKER, build_templates


def released() -> pa.Table:
    """Bench spans as the store releases them, several chunks (one per request)."""
    return pa.concat_tables([decode(t.replace(MARKER, os.urandom(8))).batch.table for t in build_templates(3)])


@pytest.mark.parametrize("shared", [True, False] if worker.SHARED_MEMORY else [False])
def test_a_batch_and_its_heads_cross_unchanged(shared: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "SHARED_MEMORY", shared)
    table, heads = released(), {7: b"\x0a\x02head"}
    open_files = len(os.listdir("/proc/self/fd"))
    ours, theirs = mp.Pipe()
    with ours, theirs:
        # Sent from another thread: the pipe holds less than the batch.
        sender = threading.Thread(target=worker._send_table, args=(ours, table, heads, os.getpid()))
        sender.start()
        got_heads, size = worker.pickle.loads(theirs.recv_bytes())
        got = worker._receive_table(theirs, size)
        sender.join()
        assert (size is not None) == shared
        assert not theirs.poll()  # nothing of the batch left on the pipe
    assert got_heads == heads
    assert got.equals(table)  # the spans' bytes too, after the sender closed its end of the file
    assert got.column("raw").to_pylist() == table.column("raw").to_pylist()
    del got  # the mapping (and the descriptor it keeps) goes with the batch's last array
    assert len(os.listdir("/proc/self/fd")) == open_files
