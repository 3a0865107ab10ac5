"""processor.analysis.worker and .transport: a released batch reaches the worker whole, by memory file
or through the pipe, and a memory file is written again only once the worker has let go of it."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import pyarrow as pa
import pytest

from processor.analysis import transport, worker
from processor.analysis.transport import Mappings, MemoryFiles
from processor.receivers.decode import decode
from processor.tools.bench import MARKER, build_templates

shared_only = pytest.mark.skipif(not worker.SHARED_MEMORY, reason="memory files are Linux's")


def released(requests: int = 3) -> pa.Table:
    """Bench spans as the store releases them, several chunks (one per request), every trace new."""
    return pa.concat_tables([decode(t.replace(MARKER, os.urandom(8))).batch.table
                             for t in build_templates(requests)])


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def cross(table: pa.Table, heads: dict[int, bytes], files: MemoryFiles | None,
          mappings: Mappings) -> tuple[pa.Table, dict[int, bytes], int | None]:
    """``table`` sent and received over a pipe as between the receiving process and its worker."""
    ours, theirs = mp.Pipe()
    with ours, theirs:
        # Sent from another thread: the pipe holds less than the batch.
        sender = threading.Thread(target=worker._send_table, args=(ours, table, heads, os.getpid(), files))
        sender.start()
        got_heads, size, token = worker.pickle.loads(theirs.recv_bytes())
        got = worker._receive_table(theirs, size, token, mappings)
        sender.join()
        assert (size is not None) == (files is not None)
        assert not theirs.poll()  # nothing of the batch left on the pipe
    return got, got_heads, token


@pytest.mark.parametrize("shared", [True, False] if worker.SHARED_MEMORY else [False])
def test_a_batch_and_its_heads_cross_unchanged(shared: bool) -> None:
    table, heads = released(), {7: b"\x0a\x02head"}
    before = open_files()
    files = MemoryFiles() if shared else None
    got, got_heads, _ = cross(table, heads, files, Mappings())
    assert got_heads == heads
    assert got.schema == table.schema
    assert got.equals(table)  # the spans' bytes too, after the sender closed its end of the file
    assert got.column("raw").to_pylist() == table.column("raw").to_pylist()
    del got
    if files is not None:
        files.close()
    assert open_files() == before  # no descriptor left behind, lent files included


@shared_only
def test_files_are_written_again_once_let_go_and_batches_cross_whole() -> None:
    # batches of other sizes, larger and smaller, into the same files: what a smaller one leaves of
    # a larger one's bytes beyond its end is not read
    files, mappings = MemoryFiles(), Mappings()
    tables = [released(n) for n in (3, 1, 4, 2, 1, 3)]
    tokens = []
    for table in tables * 2:
        got, _, token = cross(table, {}, files, mappings)
        assert got.schema == table.schema and got.equals(table)
        tokens.append(token)
        del got
        files.give_back(mappings.let_go())
    assert len(set(tokens)) == 1  # one file did for all: each was let go of before the next
    assert files.free == 1 and files.lent == 0
    files.close()


@shared_only
def test_a_file_is_not_written_again_while_the_worker_still_holds_its_batch() -> None:
    files, mappings = MemoryFiles(), Mappings()
    first = released(2)
    kept, _, token = cross(first, {}, files, mappings)  # an array of it outlives its analysis
    column = kept.column("raw")
    del kept
    files.give_back(mappings.let_go())
    others = set()
    for _ in range(3):
        got, _, other = cross(released(3), {}, files, mappings)
        others.add(other)
        del got
        files.give_back(mappings.let_go())
    assert column.to_pylist() == first.column("raw").to_pylist()  # its bytes were not overwritten
    assert token not in others and len(others) == 1  # the others went in one file, not in its
    assert files.lent == 1 and files.free == 1  # not given back while viewed
    del column
    files.give_back(mappings.let_go())
    assert files.lent == 0
    files.close()


@shared_only
def test_files_are_bounded_and_closed_when_idle() -> None:
    before = open_files()
    files = MemoryFiles(keep=2, lent=3, idle=0.2)
    taken = [files.take() for _ in range(5)]
    assert [t for t, _ in taken][3:] == [None, None]  # beyond 3 lent: a file of its own, not lent
    for token, fd in taken:
        if token is None:
            os.close(fd)
    files.give_back([t for t, _ in taken if t is not None])
    assert files.free == 2 and files.lent == 0  # the third one closed
    deadline = time.monotonic() + 10
    while files.free and time.monotonic() < deadline:
        time.sleep(0.05)
    assert files.free == 0  # closed after idling
    assert open_files() == before
    files.close()


@shared_only
def test_a_file_that_could_not_be_written_is_not_left_lent(monkeypatch: pytest.MonkeyPatch) -> None:
    files = MemoryFiles()

    def full(fd: int, table: pa.Table) -> int:
        raise OSError("no space")

    monkeypatch.setattr(worker, "write_stream", full)
    ours, theirs = mp.Pipe()
    with ours, theirs, pytest.raises(OSError):
        worker._send_table(ours, released(1), {}, os.getpid(), files)
    assert files.lent == 0 and files.free == 1
    files.close()


def _echo(conn) -> None:
    """A stand-in worker: receives batches as ``worker._serve`` does and sends each back pickled,
    with the files it let go of."""
    mappings = Mappings()
    while True:
        message = worker.pickle.loads(conn.recv_bytes())
        if message is None:
            return
        _, size, token = message
        table = worker._receive_table(conn, size, token, mappings)
        batch = worker.pickle.dumps(table)
        del table
        conn.send_bytes(worker.pickle.dumps((batch, mappings.let_go())))


@shared_only
@pytest.mark.slow  # starts processes
def test_batches_cross_to_a_worker_process_and_to_the_one_replacing_it() -> None:
    ctx = mp.get_context("spawn")
    tables = [released(n) for n in (2, 1, 3)]
    for life in range(2):  # the second worker replaces a killed one, with files of its own
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=_echo, args=(theirs,), daemon=True)
        process.start()
        theirs.close()
        files = MemoryFiles()
        try:
            for table in tables * 3:
                worker._send_table(ours, table, {}, process.pid, files)
                got, let_go = worker.pickle.loads(ours.recv_bytes())
                assert worker.pickle.loads(got).equals(table)
                files.give_back(let_go)
            assert files.lent == 0 and files.free == 1  # each file came back and was written again
            if life == 0:
                worker._send_table(ours, tables[0], {}, process.pid, files)
                process.kill()  # dies holding a lent file
                process.join(5)
                assert files.lent == 1
            else:
                ours.send_bytes(worker.pickle.dumps(None))
                process.join(5)
                assert process.exitcode == 0
        finally:
            files.close()
            ours.close()
            process.kill()
        assert files.lent == files.free == 0


def test_the_write_buffer_changes_no_byte_of_the_stream(tmp_path) -> None:
    table = released(2)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    fd = os.open(tmp_path / "batch", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"x" * (sink.getvalue().size + 100))  # a longer file: written from its start
        size = transport.write_stream(fd, table)
        assert os.pread(fd, size, 0) == sink.getvalue().to_pybytes()
    finally:
        os.close(fd)
