"""Release: completed traces leave the store, are analysed, annotated and exported.

The release loop runs every ``release_interval`` (sooner when the assembler
has urgent work, and when candidates for an early release are due for their
check, at most twice per ``complete_grace`` so that releases stay batched): it
asks the store which candidates are whole (``assembler``), asks the assembler
which traces are due, takes them from the store in chunks, and for each chunk waits for the analysis verdict,
annotates the spans (``annotator``), frames them into payloads (``otlp.payload``)
and hands each payload to every exporter.  Up to ``IN_FLIGHT`` chunks are out of
the store at once: one is analysed while the next waits at the analysis and
the one before is annotated and exported, so the analysis (by default a
process of its own) never waits for this process to take and send it a chunk,
and both work at once.  A turn's last chunk may still be under analysis when
the turn ends (it is exported when its verdict is back), and a turn that gives
the analysis work leaves the due traces short of a whole chunk to lead the
next turn, so that under a backlog each analysis gets a whole chunk.  Each turn that released spans hands the
Arrow memory they took back to the system (``SpanStore.release_unused``).  Late spans of an already released trace get the verdict their trace
got; they are not analysed again on their own (a fragment would mislead the
rules).  With a durable store, a payload's spans leave the journal as soon as
every exporter has settled that payload (``settlement``).  Once the store has
been empty and nothing released for a moment after a release, memory the
burst freed is handed back to the system (``service.memory``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Collection, Sequence
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from processor.analysis.protocols import Analysis
from processor.analysis.verdict import BatchVerdict, TraceVerdict
from processor.annotator import annotate, annotations, late_annotations
from processor.assembler import Assembler, Due, ReleaseReason
from processor.exporters.base import Exporter
from processor.model import ReleasedSpans, SpanBatch
from processor.otlp.payload import encode_payloads
from processor.otlp.spanedit import Annotation
from processor.service.memory import FreeMemory
from processor.service.telemetry import Telemetry
from processor.service.verdicts import VerdictObserver
from processor.settlement import Settlement, with_keys
from processor.store import SpanStore

log = logging.getLogger(__name__)

# Traces per store round trip and per analysis: bounds the latency and the memory of one release.
# Each analysis also costs about a second of the worker's CPU whatever its size (the rules'
# statements, learning the baseline: tests.e2e.bench_analysis), so under a backlog, when chunks
# are full, a bigger chunk costs less per span: 10,000 traces of the bench's 10 spans took 20-25%
# less analysis CPU per span than 5,000 in alternating `faulttrace bench` runs (docs/sizing.md),
# for one more chunk of spans in memory while it is analysed.
RELEASE_CHUNK = 10_000
GROUP_GC_INTERVAL = 30.0  # seconds between sweeps of unreferenced resource/scope heads
# Seconds with the store empty and nothing released before freed memory is handed back: by
# then the last chunk is exported and deleted from the journal (~1 s for 50k spans to a local
# sink), so what they held is free too.
QUIET_BEFORE_FREE = 2.0
# Chunks taken from the store and given to the analysis before the first of them is exported: one
# under analysis, one waiting for it.  With one, the worker idled while this process took and sent
# it the next (0.2-0.6 s of each 1.2-1.5 s chunk of 100k spans under the bench's backlog); each
# more costs a chunk of unpacked spans in memory and gains nothing once the analysis is never idle.
IN_FLIGHT = 2
# An end time of 0 is none.  Typed: an untyped 0 is converted anew on each call (once per received
# request), ~60 µs where pyarrow's conversion tries to import dateutil and it is not installed.
_NEVER = pa.scalar(0, pa.int64())


def ended_traces(table: pa.Table) -> set[bytes]:
    """The traces whose root span (no parent) is in ``table`` with its end time (vectorized: a
    batch's cost, not a span's).  A set: ``Assembler.observe`` tests each trace of the batch in it."""
    root = pc.and_(pc.is_null(table.column("parent_span_id")), pc.greater(table.column("end_ns"), _NEVER))
    return set(pc.filter(table.column("trace_id"), root).to_pylist())


class Releaser:
    """Owns the release loop: ``run()`` until ``stop()``; ``release(due)`` for one set of traces."""

    def __init__(self, store: SpanStore, assembler: Assembler[TraceVerdict], analysis: Analysis | None,
                 exporters: Sequence[Exporter], telemetry: Telemetry, interval: float,
                 clock: Callable[[], float], free_memory: FreeMemory | None = None,
                 max_spans: int = 0, observer: VerdictObserver | None = None) -> None:
        self._store = store
        self._observer = observer  # counts what comes in and goes out, tells the verdicts (service.verdicts)
        self._max_spans = max_spans  # spans per payload at most (processors.batch.send_batch_max_size)
        self._assembler = assembler
        self._analysis = analysis
        self._exporters = tuple(exporters)
        self._telemetry = telemetry
        self._interval = interval
        self._clock = clock
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._running = True   # until stop()
        self._free_memory = free_memory
        self._released_since_free = False  # spans were released since memory was last handed back
        self._last_released = 0.0
        self._wake_at = float("inf")  # when the loop's next turn is planned (it is woken sooner by observe)
        # Chunks out of the store, given to the analysis and not yet exported, oldest first.
        self._pending: deque[tuple[ReleasedSpans, asyncio.Future[BatchVerdict] | None]] = deque()
        self._left: list[bytes] = []  # due traces a turn left in the store to lead the next (``_short_tail``)

    def observe(self, batch: SpanBatch) -> None:
        """A batch was stored: the assembler learns of its spans (and of the traces whose
        root span arrived ended), and an urgent release or an earlier check starts now."""
        self.observe_traces(batch.traces, ended_traces(batch.table))

    def observe_traces(self, traces: dict[bytes, int], ended: Collection[bytes] = ()) -> None:
        """``observe`` by span count per trace id (spans recovered from the journal)."""
        if self._observer is not None:
            self._observer.observe(traces)
        late = self._assembler.observe(traces, self._clock(), ended)
        if late:
            self._telemetry.late_spans.inc(late)
        check = self._assembler.next_check
        if self._assembler.has_urgent or (check is not None and check < self._wake_at):
            self._wake.set()
        self.update_gauges()

    def update_gauges(self) -> None:
        self._telemetry.buffered_spans.set(self._store.buffered_spans)
        self._telemetry.buffered_traces.set(self._assembler.buffered_traces)

    async def run(self) -> None:
        next_gc = self._clock() + GROUP_GC_INTERVAL
        began = self._clock()
        while self._running:
            # A period, not a pause: a release that took longer than the
            # interval (a backlog) is followed by the next one at once.
            self._wake_at = self._next_turn(began)
            await self._wait(self._wake_at)
            self._wake.clear()
            if not self._running:
                break
            early = self._clock() < self._wake_at
            idle = self._left_for_idle
            if early and not self._assembler.has_urgent and not idle:
                continue  # woken to plan again: a candidate's check comes sooner than planned
            began = self._clock()
            try:
                # A turn early for an idle analysis gives it what is due at once: the candidates'
                # check (up to ~0.5 s under a backlog) waits for the turn planned.
                await self.tick(began, hold_last=True, check=not (early and idle))
                if self._clock() >= next_gc:
                    next_gc = self._clock() + GROUP_GC_INTERVAL
                    await self._store.forget_unused_groups()
            except Exception:  # component boundary: keep releasing
                log.exception("releasing traces failed")

    async def _wait(self, until: float) -> None:
        """Until ``until`` or a wake-up, exporting each held chunk as its verdict comes back."""
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            while True:
                held = self._pending[0][1] if self._pending else None
                waiting = {woken} if held is None else {woken, held}
                done, _ = await asyncio.wait(waiting, timeout=max(0.0, until - self._clock()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if held is None or held not in done or woken in done:
                    return
                async with self._lock:
                    await self._finish_pending(keep=len(self._pending) - 1)
                if self._left_for_idle:
                    return  # the analysis is idle and traces wait for it: a turn now
        finally:
            woken.cancel()

    def _next_turn(self, began: float) -> float:
        """When the turn after the one that began at ``began`` is due: after the interval, or when
        the first candidate's grace ends, but not within half a ``complete_grace`` of the last turn
        (each turn scans the store and starts an analysis, whose cost per span grows as batches
        shrink), so a complete trace waits at most half a grace more than its grace.  Half, not a
        whole one: a turn releases what came in since the last, so its export also takes longer
        the longer the gap (measured, docs/sizing.md)."""
        turn = began + self._interval
        check = self._assembler.next_check
        if check is not None:
            turn = min(turn, max(check, began + self._assembler.complete_grace / 2))
        return turn

    async def tick(self, now: float, hold_last: bool = False, check: bool = True) -> None:
        """One turn of the loop: release what is due at ``now`` (first the candidates found whole,
        unless not ``check``); after a burst, free memory.  ``hold_last``: see ``release``."""
        candidates = self._assembler.to_check(now) if check else []
        if candidates:
            self._assembler.assembled(await self._store.complete(candidates))
        due = self._assembler.due(now)
        await self.release(due, hold_last)
        if due.trace_ids:  # the released spans are dropped by now: their Arrow memory goes back
            await self._store.release_unused()
        await self._free_when_drained(bool(due.trace_ids), now)

    async def _free_when_drained(self, released: bool, now: float) -> None:
        """Hand freed memory back once a burst is over: spans were released, then the store stayed
        empty and nothing was released for ``QUIET_BEFORE_FREE`` (never under a steady load,
        which keeps spans buffered)."""
        if released:
            self._released_since_free, self._last_released = True, now
        elif (self._released_since_free and self._free_memory is not None and self._store.buffered_spans == 0
              and not self._pending and now - self._last_released >= QUIET_BEFORE_FREE):
            if await asyncio.to_thread(self._free_memory.release):
                self._released_since_free = False

    def stop(self) -> None:
        """End ``run()`` after the release under way."""
        self._running = False
        self._wake.set()

    async def release(self, due: Due, hold_last: bool = False) -> None:
        """Release ``due``: analyse, annotate and export its traces.  With ``hold_last`` (the
        loop's turns) the last chunk may still be under analysis on return: it is exported when
        its verdict comes back (``run`` waits for it between turns), so the analysis works on it
        while the next turn checks the store and takes the next chunk instead of idling between
        turns (0.4-0.9 s a turn under the bench's backlog).  And a turn that gave the analysis a
        whole chunk leaves the rest short of one (``_short_tail``) to start the next turn's first
        chunk.  Otherwise everything is exported."""
        async with self._lock:
            for reason in set(due.reasons):
                self._telemetry.released_traces.labels(reason.value).inc(due.reasons.count(reason))
            late = [t for t, r in zip(due.trace_ids, due.reasons) if r is ReleaseReason.LATE]
            # The traces a turn left lead (they are due already, and still in the store): before
            # the late spans below, which could otherwise take a left trace's spans unanalysed.
            fresh = self._left + [t for t, r in zip(due.trace_ids, due.reasons) if r is not ReleaseReason.LATE]
            self._left = []
            if hold_last and not late:
                fresh, self._left = self._short_tail(fresh)
            for start in range(0, len(fresh), RELEASE_CHUNK):
                # Until a chunk is exported the next stays packed in the store, not unpacked
                # beside those under analysis.
                await self._finish_pending(keep=IN_FLIGHT - 1)
                spans = await self._store.release(fresh[start:start + RELEASE_CHUNK])
                analysis = None
                if self._analysis is not None and spans.span_count:
                    analysis = asyncio.ensure_future(self._analysis.analyze(spans.table, spans.resources))
                self._pending.append((spans, analysis))
            # Late spans take their trace's verdict: every chunk before them is exported first.
            await self._finish_pending(keep=1 if hold_last and not late else 0)
            for start in range(0, len(late), RELEASE_CHUNK):
                spans = await self._store.release(late[start:start + RELEASE_CHUNK])
                await self._export(spans, late_annotations(spans, self._assembler.verdict))
                if self._observer is not None:
                    self._observer.exported(spans, None)
            self.update_gauges()

    def _short_tail(self, fresh: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """``fresh`` split into the traces to release now and a last chunk short of
        ``RELEASE_CHUNK`` to leave for the next turn, when the analysis has a chunk to work on
        meanwhile (one under analysis, or a whole one in this turn).  Each analysis costs about a
        quarter second whatever its size: under a backlog, turns cut the due traces into whole
        chunks and tails (500-45,000 of the bench's spans), whose fixed costs took a third of
        the worker's CPU.  The tail leads the next turn, which comes as soon as the analysis is
        idle (``_left_for_idle``); without analysis nothing is left."""
        if self._analysis is None or (len(fresh) < RELEASE_CHUNK and not self._analysing):
            return fresh, []
        whole = len(fresh) - len(fresh) % RELEASE_CHUNK
        return fresh[:whole], fresh[whole:]

    @property
    def _analysing(self) -> bool:
        """A chunk is under analysis (or waiting for it)."""
        return any(analysis is not None and not analysis.done() for _, analysis in self._pending)

    @property
    def _left_for_idle(self) -> bool:
        """Traces were left for the next turn and the analysis has nothing to work on."""
        return bool(self._left) and not self._analysing

    async def _finish_pending(self, keep: int) -> None:
        """Export the chunks given to the analysis, oldest first, until ``keep`` are left; a chunk
        without analysis (or whose verdict is back) is never kept."""
        while self._pending and (len(self._pending) > keep or self._pending[0][1] is None
                                 or self._pending[0][1].done()):
            await self._finish(*self._pending.popleft())

    async def _finish(self, spans: ReleasedSpans, analysis: asyncio.Future[BatchVerdict] | None) -> None:
        """Wait for a chunk's verdict, remember it for late spans, annotate and export the chunk."""
        verdict = await analysis if analysis is not None else None  # an Analysis never raises
        if verdict is not None:
            for trace_id, trace_verdict in verdict.traces.items():
                self._assembler.set_verdict(trace_id, trace_verdict)
        await self._export(spans, annotations(verdict) if verdict is not None else {})
        if self._observer is not None:
            self._observer.exported(spans, verdict)

    async def _export(self, spans: ReleasedSpans, adds: dict[tuple[bytes, bytes], Annotation]) -> None:
        payloads = encode_payloads(spans, annotate(spans, adds), max_spans=self._max_spans)
        if not self._store.durable:
            for payload in payloads:
                for exporter in self._exporters:
                    await exporter.export(payload)
            return
        # A durable store keeps a payload's spans in its journal until every exporter is done with it.
        for payload, keys in with_keys(spans, payloads):
            settlement = Settlement(partial(self._store.forget, keys))
            for exporter in self._exporters:
                await exporter.export(dataclasses.replace(payload, on_settled=settlement.expect()))
            settlement.seal()
