"""Giving memory freed after a burst back to the system (the receiving process and the analysis worker).

Why: after a burst is delivered the allocators keep what it freed.  Measured
with ``tests.e2e.bench_memory`` (100k spans, analysis on defaults), the
receiving process settles ~200 MiB above idle; of that, glibc's malloc arenas
hold 50-80 MiB free (gRPC, protobuf and DuckDB's journal allocate through
malloc from several threads, each arena keeping its own free pages) and
pyarrow's mimalloc pool 5-20 MiB.  ``malloc_trim(0)`` returns the arenas'
free pages, ``MemoryPool.release_unused()`` the pool's; both only once the
process is idle, so a steady load never pays for it.  What stays is held, not
free: DuckDB's own allocator, the interpreter's object arenas, and state that
is meant to last (the late-span cache, the localizer's baseline).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

import pyarrow as pa

log = logging.getLogger(__name__)

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
