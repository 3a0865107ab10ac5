"""The memory files released batches cross to the analysis worker in (``processor.analysis.worker``).

The receiving process writes a batch's Arrow IPC stream into an anonymous
memory file (``memfd_create``) and passes its descriptor; the worker maps it
and reads the batch's arrays in place.  What writing costs is mostly the
kernel's: each page of a new file is allocated and zeroed as the write
reaches it.  A file the worker has let go of is therefore written again
instead of a new one (``MemoryFiles``), through a buffer of ``WRITE_BUFFER``
bytes instead of buffer by buffer (7,000 small writes, each a Python call and
a system call).  For 100k of the bench's spans (62 MB in 200 record batches)
the writing thread's CPU went from 49 ms to 16 (medians, old and new
alternated on the 2-core machine; ~30 of the 49 a new file, buffered, ~13 a
file written again, buffered); in the full bench, 0.60 µs a span to 0.35.
Mapping the file to write it costs more: a page fault a page.

A file is written again only once the worker has told that it no longer maps
it (``Mappings.let_go``): its arrays are views of the mapping, and the
mapping is closed only when none is left (``mmap.close`` refuses while a
buffer is exported).  The files belong to one worker: a new worker gets new
ones, and the files lent to a dead one are closed, never reused.
"""

from __future__ import annotations

import mmap
import os
import threading
import time

import pyarrow as pa

WRITE_BUFFER = 256 << 10  # bytes: 64 KiB to 4 MiB measured the same; a few hundred writes for 60 MB
# Free files kept: one does while a batch is analysed and the next written, the one before given
# back with its verdict (more only when batches are sent further ahead).
KEEP = 1
LENT = 8  # files lent at most; beyond, a batch goes in a file of its own (a worker holding on to its batches)
# Seconds without a batch after which the free files are closed, their memory going back.  Longer
# than the release loop's gaps between batches under load: 2 s closed the file between most of the
# bench's batches (3 s apart on the loaded 2-core machine) and every batch took a new one.
IDLE = 10.0


def write_stream(fd: int, table: pa.Table) -> int:
    """Write ``table`` as an Arrow IPC stream at the start of the file ``fd``; the bytes written."""
    os.lseek(fd, 0, os.SEEK_SET)
    with open(fd, "wb", buffering=0, closefd=False) as file:
        sink = pa.BufferedOutputStream(pa.PythonFile(file, mode="w"), WRITE_BUFFER)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        sink.flush()
        return file.tell()


class MemoryFiles:
    """The memory files one worker is sent batches in (the receiving side).

    ``take`` gives a file to write a batch into, with the token the worker
    returns it by (``give_back``) once it has let go of it; a token of None:
    the file is not lent, and its descriptor is closed once sent.  At most
    ``keep`` free files are kept, and none after ``idle`` seconds without a
    batch.  Thread-safe: batches are sent on one thread, verdicts (and the
    tokens they carry) read on another.
    """

    def __init__(self, keep: int = KEEP, lent: int = LENT, idle: float = IDLE) -> None:
        self._keep, self._max_lent, self._idle = keep, lent, idle
        self._free: list[tuple[int, int]] = []  # (token, descriptor), the last freed last
        self._lent: dict[int, int] = {}  # token -> descriptor, while the worker may map the file
        self._next_token = 0
        self._taken_at = time.monotonic()
        self._closed = False
        self._changed = threading.Condition()
        threading.Thread(target=self._close_when_idle, name="faulttrace-memory-files", daemon=True).start()

    def take(self) -> tuple[int | None, int]:
        """A file to write a batch into: (its token, or None if it is not lent; its descriptor)."""
        with self._changed:
            self._taken_at = time.monotonic()
            if self._free:
                token, fd = self._free.pop()
            elif len(self._lent) < self._max_lent and not self._closed:
                token, fd = self._next_token, os.memfd_create("faulttrace-batch", os.MFD_CLOEXEC)
                self._next_token += 1
            else:
                return None, os.memfd_create("faulttrace-batch", os.MFD_CLOEXEC)
            self._lent[token] = fd
            return token, fd

    def give_back(self, tokens: list[int]) -> None:
        """The worker no longer maps the files ``tokens``: they may be written again."""
        with self._changed:
            for token in tokens:
                fd = self._lent.pop(token, None)
                if fd is None:
                    continue
                if self._closed or len(self._free) >= self._keep:
                    os.close(fd)
                else:
                    self._free.append((token, fd))
            self._changed.notify()

    def close(self) -> None:
        """Close every file, lent or free: reading a closed descriptor's file is still possible for a
        process that maps it, and nothing is written into it again."""
        with self._changed:
            self._closed = True
            for _, fd in self._free:
                os.close(fd)
            for fd in self._lent.values():
                os.close(fd)
            self._free, self._lent = [], {}
            self._changed.notify()

    @property
    def free(self) -> int:
        with self._changed:
            return len(self._free)

    @property
    def lent(self) -> int:
        with self._changed:
            return len(self._lent)

    def _close_when_idle(self) -> None:
        with self._changed:
            while not self._closed:
                waited = time.monotonic() - self._taken_at
                if self._free and waited >= self._idle:
                    for _, fd in self._free:
                        os.close(fd)
                    self._free = []
                self._changed.wait(max(self._idle - waited, 0.05) if self._free else None)


class Mappings:
    """The batches' files a worker maps (the worker's side of ``MemoryFiles``)."""

    def __init__(self) -> None:
        self._held: dict[int, mmap.mmap] = {}  # token -> mapping, until no array views it

    def read(self, fd: int, size: int, token: int | None) -> pa.Table:
        """The batch of ``size`` bytes in the file ``fd`` (closed here); its arrays are views of the
        mapping.  A lent file (``token``) is kept mapped until ``let_go`` finds no array left."""
        try:
            mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        if token is not None:
            self._held[token] = mapped
        return pa.ipc.open_stream(pa.py_buffer(mapped)).read_all()

    def let_go(self) -> list[int]:
        """Unmap the files no array views any more; their tokens (for ``MemoryFiles.give_back``)."""
        freed = []
        for token, mapped in list(self._held.items()):
            try:
                mapped.close()
            except BufferError:  # an array of its batch is still alive
                continue
            del self._held[token]
            freed.append(token)
        return freed
