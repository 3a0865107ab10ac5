"""Cost of ``service.verdicts.VerdictObserver.exported`` on one release chunk: 5,000 traces of 10
spans, one in ten with a root cause; medians of 7, metrics only and with the log sentences (to
/dev/null) and the incident summary.

    python -m tests.service.bench_verdicts
"""

from __future__ import annotations

import logging
import os
import statistics
import time

import pyarrow as pa

from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, Symptom, TraceVerdict
from processor.model import ReleasedSpans
from processor.service.incidents import Incidents
from processor.service.telemetry import Telemetry
from processor.service.verdicts import VerdictObserver

TRACES, SPANS = 5000, 10


def chunk() -> tuple[ReleasedSpans, BatchVerdict]:
    tids = [i.to_bytes(16, "big") for i in range(TRACES)]
    cols: dict[str, list] = {k: [] for k in ("trace_id", "span_id", "parent_span_id", "service", "name",
                                             "status_code", "status_message", "start_ns", "end_ns")}
    for t in tids:
        for s in range(SPANS):
            for k, v in (("trace_id", t), ("span_id", t[-4:] + s.to_bytes(4, "big")),
                         ("parent_span_id", None if s == 0 else t[-4:] + bytes(4)), ("service", f"svc{s}"),
                         ("name", f"op{s}"), ("status_code", 2 if s == 0 else 0), ("status_message", ""),
                         ("start_ns", 0), ("end_ns", 10**6)):
                cols[k].append(v)
    spans = ReleasedSpans(pa.table(cols), {}, {}, TRACES)
    evidence = (Evidence("infra.x", "svc9 refused", 0.75, 0.75, "infrastructure"),
                Evidence("localizer.errors", "error origin", 0.5, 0.5, "infrastructure", "localizer"))
    traces, symptoms = {}, {}
    for t in tids[::10]:
        cause, root = t[-4:] + (9).to_bytes(4, "big"), t[-4:] + bytes(4)
        traces[t] = TraceVerdict(t, root, (Candidate(cause, "svc9", "op9", 1, 0, 1, evidence, rank=1),))
        symptoms[t] = (Symptom(root, cause, "inherited"),)
    return spans, BatchVerdict(traces, symptoms)


def once(spans: ReleasedSpans, verdict: BatchVerdict, tell: bool) -> float:
    observer = VerdictObserver(Telemetry(), "faulttrace", log_verdicts=tell, incidents=Incidents(60) if tell else None)
    observer.observe(dict.fromkeys(spans.trace_ids, SPANS))
    started = time.perf_counter()
    observer.exported(spans, verdict)
    return time.perf_counter() - started


def main() -> None:
    sentences = logging.getLogger("faulttrace.verdict")
    sentences.addHandler(logging.FileHandler(os.devnull))
    sentences.setLevel(logging.INFO)
    sentences.propagate = False
    spans, verdict = chunk()
    runs: dict[str, list[float]] = {"metrics only": [], "metrics, sentences and incidents": []}
    for _ in range(7):  # alternating, so machine noise falls on both
        runs["metrics only"].append(once(spans, verdict, False))
        runs["metrics, sentences and incidents"].append(once(spans, verdict, True))
    for what, times in runs.items():
        m = statistics.median(times)
        print(f"{what}: median {m * 1e3:.1f} ms per chunk of {spans.span_count} spans "
              f"({len(verdict.traces)} with a root cause), {m / spans.span_count * 1e6:.2f} us/span")


if __name__ == "__main__":
    main()
