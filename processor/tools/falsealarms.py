"""False alarms through the running pipeline: fault-free traffic replayed into it, the share of its
traces that leave with ``rca.root_cause`` (``faulttrace eval --healthy FILE``).

Fault-free traffic (a baseline file: OTLP/JSON lines or protobuf, gzip or not) is sent
request by request to a ``LivePipeline`` (the real receiver, store, assembler
with serve's ``decision_wait`` and ``release_interval``, the analysis worker
learning online after its seed, annotation, a ``file`` exporter), ``pace``
seconds apart, so the same traffic can be replayed at several speeds and so
in different batches.  The localizer is seeded with ``seed`` (a dataset's
baseline: other healthy traffic of the same system) or starts cold.  Every
trace that comes out with a span tagged ``rca.root_cause`` is a false alarm;
the report counts them, and per evidence source (the rules, trees and
localizer sources their ``rca.finding`` events name) the traces it is on.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from processor.config import FaulttraceProcessorConfig
from processor.otlp.tracefile import read_requests
from processor.tools.replay import LivePipeline, ReplayError, replay_config

# Every span must have come out this long after the last request was sent (the pipeline's
# stop exports whatever is still buffered, so this only bounds a stuck replay).
TIMEOUT = 600.0
ERROR = 2  # OTLP status code


@dataclass(frozen=True, slots=True)
class FalseAlarms:
    """Fault-free traces replayed through the pipeline, and those that left with a root cause."""

    traces: int
    spans: int
    tagged: int
    root_failed: int              # of the tagged traces, those whose root span ended in error
    by_source: dict[str, int]     # evidence source -> tagged traces it is on
    confidences: tuple[float, ...]  # the first candidate's rca.confidence, per tagged trace
    seconds: float
    pace: float
    seed: str | None
    tagged_traces: frozenset[bytes] = frozenset()  # the ids of the tagged traces

    @property
    def share(self) -> float:
        return self.tagged / self.traces if self.traces else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"traces": self.traces, "spans": self.spans, "tagged": self.tagged, "root_failed": self.root_failed, "share": round(self.share, 4),
                "by_source": dict(sorted(self.by_source.items(), key=lambda kv: (-kv[1], kv[0]))),
                "median_confidence": _median(self.confidences), "seconds": round(self.seconds, 1),
                "pace": self.pace, "seed": self.seed}


def replay_healthy(healthy: str | Path, seed: str | Path | None, pace: float = 0.0,
                   rules: tuple[str, ...] = (), builtin_rules: bool = True) -> FalseAlarms:
    """``healthy`` replayed through one pipeline seeded with ``seed`` (None: cold), ``pace`` seconds
    between requests; what came out counted."""
    if pace < 0:
        raise ValueError(f"--pace {pace}: seconds between requests, 0 or more")
    with tempfile.TemporaryDirectory(prefix="faulttrace-healthy-") as tmp:
        return asyncio.run(_replay(Path(healthy), Path(seed) if seed else None, Path(tmp) / "out.jsonl", pace,
                                   rules, builtin_rules))


async def _replay(healthy: Path, seed: Path | None, out: Path, pace: float, rules: tuple[str, ...],
                  builtin_rules: bool) -> FalseAlarms:
    defaults = FaulttraceProcessorConfig()
    config = replay_config(out, seed, defaults.decision_wait, defaults.release_interval, rules, builtin_rules)
    requests = read_requests(healthy)
    spans = sum(len(ss.spans) for r in requests for rs in r.resource_spans for ss in rs.scope_spans)
    started = time.monotonic()
    async with LivePipeline(config) as live:
        for request in requests:
            await live.send(request)
            if pace:
                await asyncio.sleep(pace)
        if not await live.wait_exported(spans, TIMEOUT):
            raise ReplayError(f"{live.exported} of {spans} spans came out of the pipeline within {TIMEOUT:.0f}s")
    seconds = time.monotonic() - started
    tagged, failed, confidences, by_source, ids = 0, 0, [], Counter(), set()
    for trace_id in live.readback.rows:
        read = live.readback.trace(trace_id)
        verdict = read.verdict
        if not verdict.candidates:
            continue
        tagged += 1
        ids.add(trace_id)
        failed += bool(read.spans.root and read.spans.root["status_code"] == ERROR)
        confidences.append(verdict.candidates[0].confidence)
        by_source.update({e.source for c in verdict.candidates for e in c.evidence})
    return FalseAlarms(len(live.readback.rows), spans, tagged, failed, dict(by_source), tuple(confidences), seconds, pace,
                       str(seed) if seed else None, frozenset(ids))


def write_text(r: FalseAlarms, healthy: str, out: TextIO) -> None:
    seeded = f"seeded with {r.seed}" if r.seed else "cold (no seed baseline)"
    out.write(f"fault-free traffic {healthy} replayed through the pipeline, {seeded}, "
              f"{r.pace:g}s between requests, in {r.seconds:.1f}s\n")
    out.write(f"traces tagged with rca.root_cause: {r.tagged} of {r.traces} ({100 * r.share:.1f}%)")
    if r.confidences:
        out.write(f", median confidence {_median(r.confidences):.2f}; {r.root_failed} of them failed at the root")
    out.write("\n")
    for source, n in sorted(r.by_source.items(), key=lambda kv: (-kv[1], kv[0])):
        out.write(f"  {source:<40} {n:>5} traces ({100 * n / max(1, r.traces):.1f}%)\n")


def _median(values: tuple[float, ...]) -> float | None:
    return round(statistics.median(values), 4) if values else None
