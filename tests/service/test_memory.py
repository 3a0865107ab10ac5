"""FreeMemory hands free allocator pages back to the system, and not too often."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from processor.service.memory import FreeMemory, _malloc_trim


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc only")
def test_release_returns_pages_glibc_keeps_after_free():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    chunk, count = 64 * 1024, 1600  # 100 MiB in chunks under the mmap threshold: they come from the heap
    blocks = [libc.malloc(chunk) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, chunk)
    pinned = libc.malloc(chunk)  # above the freed ones: the heap's top cannot shrink past it
    for b in blocks:
        libc.free(b)
    before = rss()
    assert FreeMemory().release()
    assert rss() < before - 50 * 1024 * 1024
    libc.free(pinned)


def test_release_waits_for_the_interval():
    now = [100.0]
    free = FreeMemory(interval=10.0, clock=lambda: now[0])
    assert free.release()
    now[0] += 9.9
    assert not free.release()
    now[0] += 0.2
    assert free.release()
