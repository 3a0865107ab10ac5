"""What the pipeline tells about its own verdicts: metrics, a sentence per trace, incidents.

``VerdictObserver`` sits beside the release loop: the ingest tells it what was
stored (``observe``: the processor's incoming items, each trace's last span
time), the releaser what it handed to the exporters and with which verdict
(``exported``: outgoing items, traces analysed and with a root cause, findings
by source and layer, the verdict latency, the log sentence, the incident
summary).  ``MeasuredAnalysis`` times each batch's analysis.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dsl import AttrRef
from processor.analysis.protocols import Analysis
from processor.analysis.verdict import BatchVerdict
from processor.model import ReleasedSpans
from processor.service.incidents import Incidents
from processor.service.sentence import describe, finding, incident_key, span_facts, trace_url
from processor.service.telemetry import SIGNAL, Telemetry

log = logging.getLogger("faulttrace.verdict")


class LastSpanTimes:
    """When each buffered trace's latest span was stored, for the verdict latency.

    A trace's time is taken when its spans are exported.  Bounded all the same: a time
    never taken (a trace still buffered at a stop) is forgotten, oldest first, past ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._times: OrderedDict[bytes, float] = OrderedDict()

    def note(self, trace_ids: Mapping[bytes, int], now: float) -> None:
        for trace_id in trace_ids:
            self._times[trace_id] = now
            self._times.move_to_end(trace_id)
        while len(self._times) > self._limit:
            self._times.popitem(last=False)

    def take(self, trace_id: bytes) -> float | None:
        return self._times.pop(trace_id, None)

    def __len__(self) -> int:
        return len(self._times)


class VerdictObserver:
    """Counts, times and tells the verdicts of one pipeline (see the module docstring)."""

    def __init__(self, telemetry: Telemetry, processor_id: str, *, log_verdicts: bool = True,
                 url_template: str = "", incidents: Incidents | None = None, max_traces: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._telemetry = telemetry
        self._incoming = telemetry.processor_incoming_items.labels(processor_id, SIGNAL)
        self._outgoing = telemetry.processor_outgoing_items.labels(processor_id, SIGNAL)
        self._log = log_verdicts
        self._url = url_template
        self.incidents = incidents
        # Twice the buffered traces the assembler allows: the traces waiting plus a release's worth.
        self._last_span = LastSpanTimes(2 * max_traces)
        self._clock = clock

    def observe(self, traces: Mapping[bytes, int]) -> None:
        """Spans were stored: span count by trace id."""
        self._incoming.inc(sum(traces.values()))
        self._last_span.note(traces, self._clock())

    def exported(self, spans: ReleasedSpans, verdict: BatchVerdict | None) -> None:
        """A chunk of released spans was handed to the exporters, with its verdict (None: not
        analysed: late spans, no analysis configured, or an analysis that failed)."""
        self._outgoing.inc(spans.span_count)
        now = self._clock()
        # Each trace once, in the order of its first span (Arrow's unique keeps it): not a Python
        # object per released span, as spans.trace_ids would build.  Taken either way: the times stay few.
        for trace_id in pc.unique(spans.table.column("trace_id")).to_pylist():
            last = self._last_span.take(trace_id)
            if last is not None and verdict is not None:
                self._telemetry.verdict_latency.observe(max(0.0, now - last))
        if verdict is None:
            return
        self._telemetry.analyzed_traces.inc(spans.trace_count)
        # what the annotator writes: a first candidate below min_confidence is no root cause
        blamed = [v for v in verdict.traces.values() if v.root_cause is not None]
        if not blamed:
            return
        self._telemetry.root_cause_traces.inc(len(blamed))
        # Counted per label set first: one labels() lookup (a lock and a dict) per series, not per finding.
        found = Counter((e.source, e.kind, e.layer) for v in blamed for c in v.written for e in c.evidence)
        for key, n in found.items():
            self._telemetry.findings.labels(*key).inc(n)
        if not self._log and self.incidents is None:
            return
        wanted = [v.root_span_id for v in blamed if v.root_span_id is not None]
        facts = span_facts(spans.table, wanted) if spans.table is not None else {}
        for v in blamed:
            if self._log:
                log.info("%s", describe(v, verdict.symptoms.get(v.trace_id, ()), facts, self._url))
            if self.incidents is not None:
                top = v.root_cause
                assert top is not None
                self.incidents.add(incident_key(v, facts), top.layer, finding(top).source,
                                   trace_url(self._url, v.trace_id) or f"trace {v.trace_id.hex()}")


class MeasuredAnalysis:
    """An ``Analysis`` whose every batch is timed (``faulttrace_processor_analysis_duration_seconds``)."""

    def __init__(self, inner: Analysis, telemetry: Telemetry) -> None:
        self.inner = inner
        self._duration = telemetry.analysis_duration

    def projection(self) -> frozenset[AttrRef]:
        return self.inner.projection()

    def __getattr__(self, name: str) -> Any:
        """Anything else the wrapped analysis offers (a worker's pid, …) passes through."""
        return getattr(self.inner, name)

    async def analyze(self, released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict:
        started = time.perf_counter()
        try:
            return await self.inner.analyze(released, resources)
        finally:
            self._duration.observe(time.perf_counter() - started)

    def close(self) -> None:
        self.inner.close()
