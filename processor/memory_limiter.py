"""The ``memory_limiter`` processor: admission control on the memory faulttrace uses.

As the collector's memorylimiterprocessor: every ``check_interval`` the memory
in use is measured and compared with a hard limit (``limit_mib``, or
``limit_percentage`` of the machine's or the container's memory) and a soft
limit below it by the spike allowance (``spike_limit_mib`` /
``spike_limit_percentage``, 20% of the limit by default).  Above the soft
limit, receivers refuse every request with a retryable status (gRPC
``UNAVAILABLE`` with ``RetryInfo``, HTTP 503 with ``Retry-After``) until a
measurement is below it again, and a garbage collection is forced at most
every ``min_gc_interval_when_soft_limited`` (``…_hard_limited`` above the hard
limit).  Nothing already accepted is dropped: the buffered traces go on
being released and exported, which is what frees the memory.

Unlike the collector, which reads the Go heap, what is measured is the
resident memory (RSS) of this process plus its children (the analysis worker):
DuckDB, Arrow and the interpreter allocate outside any one heap, and the
worker's memory is faulttrace's too.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import Field, model_validator

from processor.confmap import Duration, StrictModel
from processor.receivers.ingest import Overloaded
from processor.service.memory import PAGE, rss
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class MemoryLimiterConfig(StrictModel):
    """The collector's ``memory_limiter`` keys and checks (messages in its words, with the key names)."""

    check_interval: Duration = 0.0  # required, as in the collector
    limit_mib: int = Field(0, ge=0)
    spike_limit_mib: int = Field(0, ge=0)  # 0: 20% of limit_mib
    limit_percentage: int = Field(0, ge=0, le=100)
    spike_limit_percentage: int = Field(0, ge=0, le=100)  # 0: 20% of limit_percentage
    # How often a garbage collection may be forced above the soft and the hard limit (at most once a check).
    min_gc_interval_when_soft_limited: Duration = 10.0
    min_gc_interval_when_hard_limited: Duration = 0.0

    @model_validator(mode="after")
    def _limits(self) -> MemoryLimiterConfig:
        if self.check_interval <= 0:
            raise ValueError("check_interval must be greater than zero (e.g. 1s)")
        if not self.limit_mib and not self.limit_percentage:
            raise ValueError("limit_mib or limit_percentage must be greater than zero")
        if self.limit_mib and self.spike_limit_mib >= self.limit_mib:
            raise ValueError("spike_limit_mib must be smaller than limit_mib")
        if not self.limit_mib and self.spike_limit_percentage >= self.limit_percentage:
            raise ValueError("spike_limit_percentage must be smaller than limit_percentage")
        return self

    def limits(self, total: int) -> tuple[int, int]:
        """(soft, hard) in bytes; ``total`` is the memory available (percentages are of it).
        ``limit_mib`` wins over ``limit_percentage`` when both are set, as in the collector."""
        if self.limit_mib:
            hard = self.limit_mib * MIB
            spike = self.spike_limit_mib * MIB if self.spike_limit_mib else hard // 5
        else:
            hard = total * self.limit_percentage // 100
            spike = (total * self.spike_limit_percentage // 100 if self.spike_limit_percentage
                     else hard // 5)
        return hard - spike, hard


COLLECTOR_ONLY_KEYS: dict[str, str] = {
    "ballast_size_mib": "the collector removed it too; remove it",
}


def process_tree_rss() -> int:
    """Resident bytes of this process and its live children (the analysis worker)."""
    pids: list[int | str] = ["self", *(p.pid for p in multiprocessing.active_children() if p.pid)]
    if not Path("/proc/self/statm").exists():  # not Linux: the peak, the best the standard library tells
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return sum(rss(pid) for pid in pids)


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "no limit" with a huge number
            return int(text)
    return None


def total_memory() -> int:
    """The memory limit_percentage is of: the container's limit (cgroup v2 or v1) when it has one,
    else the machine's physical memory."""
    physical = os.sysconf("SC_PHYS_PAGES") * PAGE
    limit = _cgroup_limit()
    return min(physical, limit) if limit else physical


class MemoryLimiter:
    """Measures memory every ``check_interval``; ``admit()`` raises ``Overloaded`` above the soft limit."""

    def __init__(self, component_id: str, config: MemoryLimiterConfig, telemetry: Telemetry,
                 usage: Callable[[], int] = process_tree_rss, total: Callable[[], int] = total_memory,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.component_id = component_id
        self._interval = config.check_interval
        self._gc_soft, self._gc_hard = config.min_gc_interval_when_soft_limited, config.min_gc_interval_when_hard_limited
        self._clock = clock
        self._last_gc = float("-inf")
        self.soft_limit, self.hard_limit = config.limits(total())
        self._usage = usage
        self.refusing = False
        self.used = 0
        self._task: asyncio.Task[None] | None = None
        self._refused = telemetry.memory_limiter_refused_requests.labels(component_id)
        self._used_gauge = telemetry.memory_limiter_used_bytes.labels(component_id)
        self._refusing_gauge = telemetry.memory_limiter_refusing.labels(component_id)
        telemetry.memory_limiter_limit_bytes.labels(component_id, "soft").set(self.soft_limit)
        telemetry.memory_limiter_limit_bytes.labels(component_id, "hard").set(self.hard_limit)

    async def start(self) -> None:
        self.check()
        log.info("memory_limiter %s: soft limit %d MiB, hard limit %d MiB, now %d MiB", self.component_id,
                 self.soft_limit // MIB, self.hard_limit // MIB, self.used // MIB)
        self._task = asyncio.create_task(self._run(), name=f"faulttrace-{self.component_id}")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def admit(self) -> None:
        """Raise ``Overloaded`` (retryable) while the last measurement is above the soft limit."""
        if self.refusing:
            self._refused.inc()
            raise Overloaded(f"faulttrace is short of memory ({self.used // MIB} MiB in use, soft limit "
                             f"{self.soft_limit // MIB} MiB, memory_limiter {self.component_id}); retry later",
                             max(1.0, self._interval))

    def check(self) -> None:
        """One measurement: above the soft limit, collect garbage (paced) and refuse if still above."""
        used = self._usage()
        if used > self.soft_limit:
            now = self._clock()
            if now - self._last_gc >= (self._gc_hard if used > self.hard_limit else self._gc_soft):
                self._last_gc = now
                gc.collect()
                used = self._usage()
        refusing = used > self.soft_limit
        if refusing != self.refusing:
            if refusing:
                log.warning("memory_limiter %s: %d MiB in use is above the soft limit (%d MiB): receivers refuse "
                            "data with a retryable status until it drops", self.component_id, used // MIB,
                            self.soft_limit // MIB)
            else:
                log.info("memory_limiter %s: %d MiB in use, below the soft limit (%d MiB): accepting data again",
                         self.component_id, used // MIB, self.soft_limit // MIB)
        self.used, self.refusing = used, refusing
        self._used_gauge.set(used)
        self._refusing_gauge.set(int(refusing))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.check()
            except Exception:  # component boundary: a failed reading must not stop the checks
                log.exception("memory_limiter %s: cannot measure memory", self.component_id)

