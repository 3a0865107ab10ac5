"""What the causal model (issue #11) costs the default analysis: CPU time per span.

    python -m tests.e2e.bench_causal DATASET [--repeats 5] [--batch-traces 400] [--bench-batch-traces 1600]
                                             [--traffic demo|bench|both]

The analysis `serve`'s worker runs by default — the rule library and its fault
trees with the localizer merged in (``processor.tools.offline.analyze``: the
batch's projection decoded from OTLP, rules, localizer, merge) — on the same
batches twice, alternating, ``--repeats`` times: once with the causal model
on (the default) and once with it off (``silent``, ``causal_past`` and
``lift`` left out of the localizer's sources, as ``faulttrace eval --without``
does).  The cost is process CPU time (``time.process_time``: user + system of
this process, the analysis runs in it), not wall time, so other work on a
shared machine moves it little; the report gives medians and their ratio.

Traffic: ``demo`` is the labelled dataset's cases (``faulttrace demo
--write-dataset DATASET``: a shop with LLM agents, a database, faults of five
layers, healthy noise), batched ``--batch-traces`` traces at a time, the
localizer seeded with the dataset's baseline; ``bench`` is ``faulttrace
bench``'s own healthy load (``processor.tools.bench.build_templates``,
``--bench-batch-traces`` traces of 10 spans a batch), where no failure has to be explained.  Seeding and one warm-up batch per
configuration are not timed.

The script runs against whichever tree it is imported from: run it with
``PYTHONPATH`` (or the working directory) set to an older checkout to compare
with the code before the causal model, whose localizer has no switches
(``--no-switch``: the default analysis only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dsl import RuleSet, load_rules
from processor.analysis.build import rule_paths
from processor.config import FaulttraceProcessorConfig
from processor.localizer import SOURCES, LocalizerAnalyzer
from processor.otlp.tracefile import read_requests
from processor.tools.offline import analyze

CAUSAL = ("silent", "causal_past", "lift")


def demo_batches(dataset: Path, batch_traces: int) -> list[list[ExportTraceServiceRequest]]:
    """The dataset's case traces (one request per trace), ``batch_traces`` to a batch."""
    requests = [r for case in sorted((dataset / "cases").iterdir()) for r in read_requests(case / "traces.jsonl.gz")]
    batches = [requests[i:i + batch_traces] for i in range(0, len(requests), batch_traces)]
    if len(batches) < 2:
        raise SystemExit(f"{dataset}: {len(requests)} traces make one batch of {batch_traces}; one warms up, "
                         "so at least two are needed (a smaller --batch-traces)")
    return batches


def bench_batches(batch_traces: int, batches: int) -> list[list[ExportTraceServiceRequest]]:
    """``faulttrace bench``'s load: requests of 50 traces of 10 spans each, healthy."""
    from processor.tools.bench import TRACES_PER_REQUEST, build_templates

    per_batch = max(1, batch_traces // TRACES_PER_REQUEST)
    templates = build_templates(per_batch * batches)
    reqs = [ExportTraceServiceRequest.FromString(t) for t in templates]
    return [reqs[i:i + per_batch] for i in range(0, len(reqs), per_batch)]


def spans_in(batch: Iterable[ExportTraceServiceRequest]) -> int:
    return sum(len(ss.spans) for r in batch for rs in r.resource_spans for ss in rs.scope_spans)


def cpu_us_per_span(batches: Sequence[list[ExportTraceServiceRequest]], rules: RuleSet, baseline: Path | None,
                    sources: tuple[str, ...]) -> float:
    """Process CPU microseconds per span to analyze ``batches`` in order with a fresh localizer
    (seeded, then warmed up on the first batch: neither is timed)."""
    localizer = LocalizerAnalyzer(baseline, sources=sources)
    try:
        analyze(batches[0], rules, localizer)
        spans, started = 0, time.process_time()
        for batch in batches[1:]:
            analyze(batch, rules, localizer)
            spans += spans_in(batch)
        return (time.process_time() - started) * 1e6 / max(1, spans)
    finally:
        localizer.close()


def measure(batches: Sequence[list[ExportTraceServiceRequest]], rules: RuleSet, baseline: Path | None,
            repeats: int, switch: bool) -> dict[str, float]:
    """Medians of ``repeats`` alternating runs with the causal model on and (``switch``) off."""
    on_sources = tuple(SOURCES)
    off_sources = tuple(s for s in SOURCES if s not in CAUSAL)
    on: list[float] = []
    off: list[float] = []
    for i in range(repeats):
        order = [(on, on_sources), (off, off_sources)] if switch else [(on, on_sources)]
        for runs, sources in (order if i % 2 == 0 else order[::-1]):
            runs.append(cpu_us_per_span(batches, rules, baseline, sources))
    out = {"spans": float(sum(spans_in(b) for b in batches[1:])), "on_us_per_span": statistics.median(on),
           "on_runs": on}
    if switch:
        out.update(off_us_per_span=statistics.median(off), off_runs=off,
                   on_over_off=statistics.median(on) / statistics.median(off))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.bench_causal", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path, help="a dataset written by faulttrace demo --write-dataset")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-traces", type=int, default=400)
    p.add_argument("--bench-batch-traces", type=int, default=1600)
    p.add_argument("--bench-batches", type=int, default=6)
    p.add_argument("--traffic", choices=("demo", "bench", "both"), default="both")
    p.add_argument("--no-switch", action="store_true", help="only the default analysis (an older tree)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.batch_traces < 1 or args.bench_batch_traces < 1 or args.bench_batches < 2:
        p.error("--repeats and the batch sizes must be at least 1, --bench-batches at least 2 (one warms up)")
    if not (args.dataset / "cases").is_dir():
        p.error(f"{args.dataset}: no cases/ (write one with faulttrace demo --write-dataset)")
    rules = load_rules(rule_paths(FaulttraceProcessorConfig()))
    baseline = args.dataset / "baseline" / "traces.jsonl.gz"
    report: dict[str, object] = {"repeats": args.repeats, "batch_traces": args.batch_traces}
    if args.traffic in ("demo", "both"):
        report["demo"] = measure(demo_batches(args.dataset, args.batch_traces), rules, baseline, args.repeats,
                                 not args.no_switch)
    if args.traffic in ("bench", "both"):
        report["bench"] = measure(bench_batches(args.bench_batch_traces, args.bench_batches), rules, None, args.repeats,
                                  not args.no_switch)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
