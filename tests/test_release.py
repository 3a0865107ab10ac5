"""The release loop hands freed memory back: Arrow's after each turn that released spans, the allocators' once a burst is over (never while spans are buffered)."""

from __future__ import annotations

import asyncio
import contextlib

from processor import release
from processor.analysis.verdict import BatchVerdict
from processor.assembler import Assembler
from processor.exporters.base import Exporter
from processor.model import ExportPayload
from processor.release import QUIET_BEFORE_FREE, Releaser
from processor.service.telemetry import Telemetry
from processor.store import SpanStore
from tests.test_store import batch


class Collecting(Exporter):
    def __init__(self) -> None:
        super().__init__("collecting")
        self.spans = 0

    async def export(self, payload: ExportPayload) -> None:
        self.spans += payload.span_count

    async def shutdown(self, timeout: float) -> None:
        pass


class CountingFree:
    def __init__(self) -> None:
        self.calls = 0

    def release(self) -> bool:
        self.calls += 1
        return True


def test_freed_memory_goes_back_once_the_store_has_drained_and_stayed_quiet():
    async def scenario() -> None:
        store = SpanStore()
        await store.open()
        assembler = Assembler(decision_wait=5.0, max_traces=100, max_spans_per_trace=100, late_span_cache=100)
        exporter, free = Collecting(), CountingFree()
        releaser = Releaser(store, assembler, None, [exporter], Telemetry(), 1.0, lambda: 0.0, free)

        async def receive(traces: range, now: float) -> None:
            spans = batch(traces, spans_per_trace=2)
            await store.append(spans)
            assembler.observe(spans.traces, now)

        try:
            await releaser.tick(0.0)
            assert free.calls == 0  # nothing was released yet: nothing to give back
            await receive(range(1, 11), 0.0)
            await receive(range(11, 21), 4.0)  # still arriving
            await releaser.tick(5.0)  # the first ten are due
            assert exporter.spans == 20 and store.buffered_spans == 20
            await releaser.tick(5.0 + QUIET_BEFORE_FREE)
            assert free.calls == 0  # spans still buffered: the burst is not over
            await releaser.tick(9.0)  # the rest are due
            assert exporter.spans == 40 and store.buffered_spans == 0
            await releaser.tick(9.0 + QUIET_BEFORE_FREE / 2)
            assert free.calls == 0  # drained, but not quiet for long enough
            await releaser.tick(9.0 + QUIET_BEFORE_FREE)
            assert free.calls == 1
            await releaser.tick(30.0)
            assert free.calls == 1  # once per burst
        finally:
            await store.close()

    asyncio.run(scenario())


class CountingStore(SpanStore):
    def __init__(self) -> None:
        super().__init__()
        self.unused_released = 0

    async def release_unused(self) -> None:
        self.unused_released += 1
        await super().release_unused()


def test_arrow_memory_goes_back_after_each_turn_that_released_spans():
    async def scenario() -> None:
        store = CountingStore()
        await store.open()
        assembler = Assembler(decision_wait=5.0, max_traces=100, max_spans_per_trace=100, late_span_cache=100)
        exporter = Collecting()
        releaser = Releaser(store, assembler, None, [exporter], Telemetry(), 1.0, lambda: 0.0)
        try:
            spans = batch(range(1, 11), spans_per_trace=2)
            await store.append(spans)
            assembler.observe(spans.traces, 0.0)
            await releaser.tick(1.0)
            assert store.unused_released == 0  # nothing released: nothing freed to give back
            await releaser.tick(5.0)
            assert exporter.spans == 20 and store.unused_released == 1
            await releaser.tick(6.0)
            assert store.unused_released == 1
        finally:
            await store.close()

    asyncio.run(scenario())


def test_at_most_two_chunks_are_out_of_the_store_at_once(monkeypatch):
    """Chunks are analysed one after another, the next given to the analysis while one is analysed
    (so the analysis never waits for it); a third stays packed in the store until the first is
    exported, instead of waiting unpacked beside them; every chunk is still exported."""
    monkeypatch.setattr(release, "RELEASE_CHUNK", 5)

    class Recording:
        def __init__(self, store: SpanStore) -> None:
            self.store = store
            self.one_at_a_time = asyncio.Lock()  # an Analysis analyses the batches in turn
            self.left_when_done: list[int] = []  # spans still buffered as each verdict comes back

        async def analyze(self, table, resources) -> BatchVerdict:
            async with self.one_at_a_time:
                await asyncio.sleep(0.01)
                self.left_when_done.append(self.store.buffered_spans)
            return BatchVerdict()

    async def scenario() -> None:
        store = SpanStore()
        await store.open()
        assembler = Assembler(decision_wait=5.0, max_traces=100, max_spans_per_trace=100, late_span_cache=100)
        exporter, analysis = Collecting(), Recording(store)
        releaser = Releaser(store, assembler, analysis, [exporter], Telemetry(), 1.0, lambda: 0.0)
        try:
            spans = batch(range(1, 16), spans_per_trace=2)
            await store.append(spans)
            assembler.observe(spans.traces, 0.0)
            await releaser.tick(5.0)  # 15 traces due: three chunks of five
            # the second chunk left the store before the first's verdict, the third only after it
            assert analysis.left_when_done == [10, 0, 0]
            assert exporter.spans == 30 and store.buffered_spans == 0
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_turn_leaves_its_last_chunk_under_analysis_and_it_is_exported_when_its_verdict_is_back(monkeypatch):
    """The loop's next turn need not wait for the last chunk's verdict (the analysis works on it
    while the next turn checks the store), yet the chunk leaves as soon as its verdict is back,
    not at the next turn."""
    monkeypatch.setattr(release, "RELEASE_CHUNK", 5)

    class LastWaits:
        def __init__(self) -> None:
            self.calls = 0
            self.go = asyncio.Event()

        async def analyze(self, table, resources) -> BatchVerdict:
            self.calls += 1
            if self.calls == 3:
                await self.go.wait()
            return BatchVerdict()

    async def scenario() -> None:
        store = SpanStore()
        await store.open()
        assembler = Assembler(decision_wait=5.0, max_traces=100, max_spans_per_trace=100, late_span_cache=100)
        exporter, analysis, now = Collecting(), LastWaits(), [0.0]
        # turns every 30 s: none comes between the verdict and the assertions below
        releaser = Releaser(store, assembler, analysis, [exporter], Telemetry(), 30.0, lambda: now[0])
        loop = asyncio.create_task(releaser.run())
        try:
            spans = batch(range(1, 16), spans_per_trace=2)
            await store.append(spans)
            assembler.observe(spans.traces, 0.0)
            await asyncio.sleep(0)
            now[0] = 50.0
            releaser._wake.set()  # the turn is due: 15 traces in three chunks of five
            for _ in range(200):
                if analysis.calls == 3 and exporter.spans == 20:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert analysis.calls == 3 and exporter.spans == 20  # the last chunk is under analysis
            assert not releaser._lock.locked()  # and the turn is over
            analysis.go.set()
            for _ in range(100):
                if exporter.spans == 30:
                    break
                await asyncio.sleep(0.01)
            assert exporter.spans == 30 and store.buffered_spans == 0
        finally:
            releaser.stop()
            await loop
            await store.close()

    asyncio.run(scenario())


class Sizes:
    """An analysis that records the traces of each chunk it is given (two spans a trace below);
    batches in turn, the ``wait_for``-th (none by default) only once ``go`` is set."""

    def __init__(self, wait_for: int = 0) -> None:
        self.traces: list[int] = []
        self.rows = 0
        self.one_at_a_time = asyncio.Lock()
        self.go = asyncio.Event()
        self.wait_for = wait_for

    async def analyze(self, table, resources) -> BatchVerdict:
        self.traces.append(table.num_rows // 2)
        self.rows += table.num_rows
        async with self.one_at_a_time:
            if len(self.traces) == self.wait_for:
                await self.go.wait()
            await asyncio.sleep(0.01)
        return BatchVerdict()


@contextlib.asynccontextmanager
async def releasing(analysis, traces: int, interval: float = 1.0, clock=lambda: 0.0):
    """A releaser (chunks of five traces) over a store holding ``traces`` traces of two spans,
    observed at 0 (due at 5); yields it with its store, assembler and exporter."""
    store = SpanStore()
    await store.open()
    assembler = Assembler(decision_wait=5.0, max_traces=100, max_spans_per_trace=100, late_span_cache=100)
    exporter = Collecting()
    try:
        spans = batch(range(1, traces + 1), spans_per_trace=2)
        await store.append(spans)
        assembler.observe(spans.traces, 0.0)
        yield Releaser(store, assembler, analysis, [exporter], Telemetry(), interval, clock), store, assembler, exporter
    finally:
        await store.close()


def test_a_turn_leaves_a_chunks_short_tail_to_lead_the_next(monkeypatch):
    """Each analysis has a fixed cost: a turn that gives the analysis whole chunks leaves the
    due traces short of another in the store; the next turn gives them first, and with the
    analysis idle and less than a chunk due, gives them whatever their number."""
    monkeypatch.setattr(release, "RELEASE_CHUNK", 5)

    async def scenario() -> None:
        analysis = Sizes()
        async with releasing(analysis, 12) as (releaser, store, assembler, exporter):
            await releaser.tick(5.0, hold_last=True)
            assert analysis.traces == [5, 5] and store.buffered_spans == 4  # two traces left
            await asyncio.sleep(0.1)  # the analysis is idle now
            await releaser.tick(5.5, hold_last=True)
            await asyncio.sleep(0.05)  # the chunk the turn held reaches the analysis
            assert analysis.traces == [5, 5, 2] and store.buffered_spans == 0
            await releaser.release(assembler.drain())
            assert exporter.spans == 24

    asyncio.run(scenario())


def test_without_analysis_or_when_stopping_no_trace_is_left(monkeypatch):
    monkeypatch.setattr(release, "RELEASE_CHUNK", 5)

    async def scenario() -> None:
        async with releasing(None, 12) as (releaser, store, _, exporter):
            await releaser.tick(5.0, hold_last=True)  # pipeline mode: nothing to wait for
            assert exporter.spans == 24 and store.buffered_spans == 0
        analysis = Sizes()
        async with releasing(analysis, 12) as (releaser, store, assembler, exporter):
            await releaser.tick(5.0, hold_last=True)
            assert store.buffered_spans == 4
            await releaser.release(assembler.drain())  # the shutdown's release takes what was left
            assert analysis.traces == [5, 5, 2] and exporter.spans == 24 and store.buffered_spans == 0

    asyncio.run(scenario())


def test_traces_left_for_a_busy_analysis_go_when_it_is_idle_not_at_the_next_planned_turn(monkeypatch):
    monkeypatch.setattr(release, "RELEASE_CHUNK", 5)

    async def scenario() -> None:
        analysis, now = Sizes(wait_for=1), [0.0]
        async with releasing(analysis, 7, interval=30.0, clock=lambda: now[0]) as (releaser, store, _, exporter):
            loop = asyncio.create_task(releaser.run())
            try:
                await asyncio.sleep(0)
                now[0] = 50.0
                releaser._wake.set()  # the turn is due: a chunk of five under analysis, two traces left
                for _ in range(200):
                    if analysis.traces == [5] and not releaser._lock.locked():
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
                assert analysis.traces == [5] and store.buffered_spans == 4
                analysis.go.set()  # idle once its verdict is back: the two leave now, 30 s before the turn planned
                for _ in range(200):
                    if exporter.spans == 14:
                        break
                    await asyncio.sleep(0.01)
                assert analysis.traces == [5, 2] and exporter.spans == 14 and store.buffered_spans == 0
            finally:
                releaser.stop()
                await loop

    asyncio.run(scenario())


def test_late_spans_of_a_trace_left_for_the_next_turn_do_not_take_it_unanalysed(monkeypatch):
    """A late span of a trace a turn left makes the next turn release the left traces first,
    analysed, and leave nothing (the late path takes whatever is in the store of its traces)."""
    monkeypatch.setattr(release, "RELEASE_CHUNK", 5)

    async def scenario() -> None:
        analysis = Sizes()
        async with releasing(analysis, 12) as (releaser, store, assembler, exporter):
            await releaser.tick(5.0, hold_last=True)
            assert store.buffered_spans == 4  # traces 11 and 12 left
            late = batch(range(11, 12), spans_per_trace=1)
            await store.append(late)
            assembler.observe(late.traces, 5.2)
            await releaser.tick(5.5, hold_last=True)
            await releaser.release(assembler.drain())
            assert analysis.rows == 25 and exporter.spans == 25 and store.buffered_spans == 0

    asyncio.run(scenario())
