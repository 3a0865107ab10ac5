"""A process's memory: how much is resident (``rss``, the one reader for the memory limiter, the
telemetry and the bench), and giving memory freed after a burst back to the system (the receiving
process and the analysis worker).

Why: after a burst is delivered the allocators keep what it freed.  Measured
with ``tests.e2e.bench_memory`` (100k spans, analysis on defaults), the
receiving process settled 200-280 MiB above idle; of that, glibc's malloc
arenas held 50-80 MiB free (gRPC, protobuf and DuckDB allocate through malloc
from several threads, each arena keeping its own free pages) and pyarrow's
mimalloc pool 5-20 MiB.  ``malloc_trim(0)`` returns the arenas' free pages,
``MemoryPool.release_unused()`` the pool's; both only once the process is
idle, so a steady load never pays for it.  What stays is not free memory:
the interpreter's object arenas (pymalloc keeps a 1 MiB arena while any
object in it lives: with analysis in the same process, 113 MiB of arenas of
which 70 MiB were unused pools after two bursts), the journal's DuckDB blocks (~30 MiB until a checkpoint;
checkpointing freed them but not the RSS), and state meant to last (the
late-span cache, the localizer's baseline in the worker).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss(pid: int | str = "self") -> int:
    """Resident bytes of process ``pid`` (Linux /proc); 0 if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0

MIN_INTERVAL = 10.0  # seconds between two releases: a trim walks every arena, and pages come back on use


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library: musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class FreeMemory:
    """``release()`` hands free allocator memory back to the system, at most every ``interval`` seconds."""

    def __init__(self, interval: float = MIN_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self._trim = _malloc_trim()
        self._interval = interval
        self._clock = clock
        self._last: float | None = None

    def release(self) -> bool:
        """Release now unless the last release was less than ``interval`` ago; whether it did.
        Blocks for a few milliseconds: call it off the event loop."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        pa.default_memory_pool().release_unused()
        if self._trim is not None:
            self._trim(0)
        return True
