"""Pipeline: wires receivers -> store -> assembler -> (analysis) -> exporters, starts and stops them in order.

One coroutine owns start and graceful stop.  Start: store (recovering spans a
file database kept), exporters, the release loop, receivers, the admin server.
Stop: receivers first (no new data), then every buffered trace is released
and exported, then exporters drain their queues within the shutdown timeout,
then the store closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from collections.abc import Callable

from processor.admin import AdminServer
from processor.analysis import Analyzer, BatchVerdict, TraceVerdict
from processor.analyzers import pipeline_analysis
from processor.annotate import Annotation, annotate
from processor.annotator import annotations, late_annotations
from processor.assembler import Assembler, Due, ReleaseReason
from processor.config import Config
from processor.exporters import build_exporter
from processor.exporters.base import Exporter
from processor.ingest import Ingest
from processor.model import ReleasedSpans
from processor.payload import encode_payloads
from processor.receivers.otlp_grpc import GrpcReceiver
from processor.receivers.otlp_http import HttpReceiver
from processor.store import SpanStore
from processor.telemetry import Telemetry

log = logging.getLogger(__name__)

# The interpreter hands its lock between threads this often.  Decoding keeps
# one thread busy in Python; every return from DuckDB (rules, localizer) waits
# for the lock, and at the default 5 ms seventy such returns per batch queue
# up.  Measured with `faulttrace bench`: 0.5 ms lifts the default analysis from
# ~11k to ~19k spans/s and leaves the no-analysis pipeline unchanged.
SWITCH_INTERVAL = 0.0005


def tune_process() -> None:
    """Process-wide settings for running a pipeline (call once at the entry point)."""
    sys.setswitchinterval(SWITCH_INTERVAL)


RELEASE_CHUNK = 5_000   # traces per store round trip: bounds the latency of one release
GROUP_GC_INTERVAL = 30.0  # seconds between sweeps of unreferenced resource/scope heads


class Pipeline:
    """A running faulttrace: build with a Config, ``await start()``, ``await stop()``."""

    def __init__(self, config: Config, analyzer: Analyzer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.telemetry = Telemetry()
        self._clock = clock
        proc = config.processor
        # ``analyzer``: run this one (in this process) instead of the configured analysis
        self._analysis = pipeline_analysis(proc, analyzer)
        self.store = SpanStore(proc.storage.path, proc.storage.memory_limit, threads=proc.storage.threads)
        self.assembler: Assembler[TraceVerdict] = Assembler(proc.decision_wait, proc.max_traces,
                                                    proc.max_spans_per_trace, proc.late_span_cache)
        self.ingest = Ingest(self.store, proc.max_buffered_spans, self.telemetry, self._on_stored,
                             retry_after=max(1.0, proc.decision_wait))
        self.exporters: list[Exporter] = [build_exporter(cid, cfg, self.telemetry)
                                          for cid, cfg in config.pipeline_exporters().items()]
        self.receivers: list[GrpcReceiver | HttpReceiver] = []
        for cid, rcfg in config.pipeline_receivers().items():
            if rcfg.protocols.grpc is not None:
                self.receivers.append(GrpcReceiver(cid, rcfg.protocols.grpc, self.ingest, self.telemetry))
            if rcfg.protocols.http is not None:
                self.receivers.append(HttpReceiver(cid, rcfg.protocols.http, self.ingest, self.telemetry))
        address = config.service.telemetry.metrics.address
        self.admin = AdminServer(address, self.telemetry, self._health) if address else None
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._release_lock = asyncio.Lock()
        self._delivered: list[tuple[bytes, bytes]] = []  # (trace id, span id) settled by every exporter
        self._running = False

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        recovered = await self.store.open()
        if recovered:
            self._on_stored(recovered)
        for exporter in self.exporters:
            await exporter.start()
        self._running = True
        self._loop_task = asyncio.create_task(self._release_loop(), name="faulttrace-release")
        for receiver in self.receivers:
            await receiver.start()
        if self.admin is not None:
            await self.admin.start()

    async def stop(self) -> None:
        """Graceful stop: nothing buffered is lost unless the shutdown timeout runs out."""
        timeout = self.config.service.shutdown_timeout
        deadline = self._clock() + timeout
        for receiver in self.receivers:
            await receiver.stop(grace=min(5.0, timeout))
        self._running = False
        if self._loop_task is not None:
            self._wake.set()
            await self._loop_task
        due = self.assembler.drain()
        try:
            await asyncio.wait_for(self._release(due), max(0.0, deadline - self._clock()))
        except TimeoutError:
            log.error("shutdown timeout (%.0fs) reached with %d spans still buffered; %s", timeout,
                      self.store.buffered_spans,
                      "the journal keeps them for the next start" if self.store.durable else "they are lost")
        for exporter in self.exporters:
            await exporter.shutdown(max(0.0, deadline - self._clock()))
        await self._forget_delivered()  # what is still undelivered stays in the journal
        self.ingest.close()
        await self.store.close()
        if self._analysis is not None:
            self._analysis.close()
        if self.admin is not None:
            await self.admin.stop()

    def ports(self) -> dict[str, int]:
        """Bound ports, by ``<component>/<transport>`` and ``metrics`` (useful with port 0)."""
        out = {f"{r.component_id}/{'grpc' if isinstance(r, GrpcReceiver) else 'http'}": r.port
               for r in self.receivers}
        if self.admin is not None:
            out["metrics"] = self.admin.port
        return out

    # --- data path -------------------------------------------------------------

    def _on_stored(self, traces: dict[bytes, int]) -> None:
        late = self.assembler.observe(traces, self._clock())
        if late:
            self.telemetry.late_spans.inc(late)
        if self.assembler.has_urgent:
            self._wake.set()
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.telemetry.buffered_spans.set(self.store.buffered_spans)
        self.telemetry.buffered_traces.set(self.assembler.buffered_traces)

    async def _release_loop(self) -> None:
        next_gc = self._clock() + GROUP_GC_INTERVAL
        interval = self.config.processor.release_interval
        began = self._clock()
        while self._running:
            # A period, not a pause: a release that took longer than the
            # interval (a backlog) is followed by the next one at once.
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, began + interval - self._clock()))
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._running:
                break
            began = self._clock()
            try:
                await self._release(self.assembler.due(began))
                await self._forget_delivered()
                if self._clock() >= next_gc:
                    next_gc = self._clock() + GROUP_GC_INTERVAL
                    await self.store.forget_unused_groups()
            except Exception:  # component boundary: keep releasing
                log.exception("releasing traces failed")

    async def _release(self, due: Due) -> None:
        async with self._release_lock:
            for reason in set(due.reasons):
                self.telemetry.released_traces.labels(reason.value).inc(due.reasons.count(reason))
            # Late spans are not analyzed again on their own (a fragment of a
            # trace would mislead the rules): they get the verdict their trace got.
            late = [t for t, r in zip(due.trace_ids, due.reasons) if r is ReleaseReason.LATE]
            fresh = [t for t, r in zip(due.trace_ids, due.reasons) if r is not ReleaseReason.LATE]
            # One chunk is analyzed while the one before it is annotated and
            # exported and the next is taken from the store, so the analysis
            # (by default a process of its own) and this process work at once.
            previous: tuple[ReleasedSpans, asyncio.Future[BatchVerdict] | None] | None = None
            for start in range(0, len(fresh), RELEASE_CHUNK):
                spans = await self.store.release(fresh[start:start + RELEASE_CHUNK])
                analysis = None
                if self._analysis is not None and spans.span_count and spans.table is not None:
                    analysis = asyncio.ensure_future(self._analysis.analyze(spans.table, spans.resources))
                if previous is not None:
                    await self._finish(*previous)
                previous = (spans, analysis)
            if previous is not None:
                await self._finish(*previous)
            for start in range(0, len(late), RELEASE_CHUNK):
                spans = await self.store.release(late[start:start + RELEASE_CHUNK])
                await self._export(spans, late_annotations(spans.trace_ids, spans.span_ids, spans.parent_span_ids,
                                                           self.assembler.verdict))
            self._update_gauges()

    async def _finish(self, spans: ReleasedSpans, analysis: asyncio.Future[BatchVerdict] | None) -> None:
        """Wait for a chunk's verdict, remember it for late spans, annotate and export the chunk."""
        verdict = None
        if analysis is not None:
            try:
                verdict = await analysis
            except Exception:  # never expected (an Analysis does not raise), and never worth the spans
                log.exception("analysis of %d spans failed; they are exported without a verdict", spans.span_count)
        if verdict is not None:
            for trace_id, trace_verdict in verdict.traces.items():
                self.assembler.set_verdict(trace_id, trace_verdict)
        await self._export(spans, annotations(verdict) if verdict is not None else {})

    async def _export(self, spans: ReleasedSpans, adds: dict[tuple[bytes, bytes], Annotation]) -> None:
        raw = spans.raw
        if adds:
            edits = {i: adds[key] for i, key in enumerate(zip(spans.trace_ids, spans.span_ids)) if key in adds}
            raw = annotate(raw, edits)
        # A durable store keeps the chunk's spans in its journal until every
        # exporter is done with every payload of it.
        settlement = _Settlement(spans, self._delivered.extend) if self.store.durable else None
        for payload in encode_payloads(spans, raw):
            for exporter in self.exporters:
                await exporter.export(payload if settlement is None
                                      else dataclasses.replace(payload, on_settled=settlement.expect()))
        if settlement is not None:
            settlement.seal()

    async def _forget_delivered(self) -> None:
        """Let delivered spans leave the journal (durable store)."""
        if self._delivered:
            done, self._delivered = self._delivered, []
            await self.store.forget(done)

    def _health(self) -> dict[str, object]:
        return {"status": "ok" if self._running else "stopping",
                "buffered_spans": self.store.buffered_spans,
                "buffered_traces": self.assembler.buffered_traces}


__all__ = ["Pipeline", "ReleaseReason"]


class _Settlement:
    """Counts a chunk's payloads out to the exporters and back: once the chunk
    is sealed (all handed out) and every one is settled, ``done`` gets the
    chunk's (trace id, span id) keys.  Exporters settle on the event loop."""

    def __init__(self, spans: ReleasedSpans, done: Callable[[list[tuple[bytes, bytes]]], None]) -> None:
        self._keys = list(zip(spans.trace_ids, spans.span_ids))
        self._done: Callable[[list[tuple[bytes, bytes]]], None] | None = done
        self._pending = 0
        self._sealed = False

    def expect(self) -> Callable[[], None]:
        """A callback for one payload handed to one exporter."""
        self._pending += 1
        settled = False

        def settle() -> None:
            nonlocal settled
            if not settled:  # once per payload and exporter, whatever the exporter does
                settled = True
                self._pending -= 1
                self._check()
        return settle

    def seal(self) -> None:
        self._sealed = True
        self._check()

    def _check(self) -> None:
        if self._sealed and self._pending == 0 and self._done is not None:
            done, self._done = self._done, None
            done(self._keys)
