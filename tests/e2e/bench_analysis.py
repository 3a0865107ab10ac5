"""CPU of the analysis worker per released batch: what `faulttrace bench` full mode's ``analysis`` column is made of.

In one process, no servers: batches of ``faulttrace bench``'s traffic
(``processor.tools.bench.build_templates``: healthy, 10 spans a trace, ~12
attributes a span) decoded by the receiver's ``decode``, then analysed as the
worker does it (``processor.analysis.runner.analyze_released``: projection,
then the configured analyzer, `serve`'s default of the rule library and the
localizer) with the bench's full-mode config.  For each batch size the first
``--warm`` batches teach the localizer's baseline and are not counted; per
counted batch it reads this process's CPU time (``time.process_time``) around
the whole analysis and around the projection (attribute decoding) alone.

Reported per size: CPU µs per span (min and median over the counted batches)
of the whole and of the projection, and ms per batch.  Two sizes give the
cost per batch that does not grow with its spans (``fixed_ms``: the line
through the two sizes' medians) and the cost per span beyond it
(``per_span_us``): the worker's CPU per span is ``per_span_us + fixed_ms /
batch size``, so the batch size the release loop hands it (``release``)
matters as much as the per-span work.  Run::

    python -m tests.e2e.bench_analysis [--spans 2000 50000] [--batches 3] [--warm 2] [--format json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.analysis.attributes import Projector
from processor.analysis.build import analysis_projection, build_analyzer
from processor.analysis.runner import analysis_connection, analyze_released
from processor.receivers.decode import decode
from processor.tools import bench

SPANS_PER_REQUEST = bench.TRACES_PER_REQUEST * bench.SPANS_PER_TRACE


def _batches(spans: int, count: int) -> list[tuple[pa.Table, dict[int, bytes]]]:
    """``count`` released batches of about ``spans`` spans each, every trace id fresh."""
    templates = bench.build_templates(16)
    out = []
    for k in range(count):
        tables, resources = [], {}
        for i in range(max(1, spans // SPANS_PER_REQUEST)):
            data = templates[(k * 7 + i) % len(templates)].replace(bench.MARKER, os.urandom(8))
            decoded = decode(ExportTraceServiceRequest.FromString(data)).batch
            tables.append(decoded.table)
            resources.update(decoded.resources)
        out.append((pa.concat_tables(tables), resources))
    return out


def measure(spans: int, batches: int, warm: int) -> dict[str, Any]:
    """CPU per span of ``batches`` analysed batches of ``spans`` spans, after ``warm`` more."""
    config = bench._config(1, 5.0, "none", [], localizer=True).processors["faulttrace"]
    analyzer = build_analyzer(config)
    assert analyzer is not None
    projector = Projector(analysis_projection(config, analyzer))
    conn = analysis_connection(config.storage)
    whole: list[float] = []
    projection: list[float] = []
    try:
        for n, (table, resources) in enumerate(_batches(spans, warm + batches)):
            t0 = time.process_time()
            projector.project(table, resources)
            t1 = time.process_time()
            analyze_released(analyzer, projector, conn, table, resources)
            t2 = time.process_time()
            if n >= warm:
                projection.append(t1 - t0)
                whole.append(t2 - t1)
            rows = table.num_rows
    finally:
        analyzer.close()
        conn.close()
    return {"spans": rows, "batches": batches,
            "us_per_span": round(statistics.median(whole) / rows * 1e6, 1),
            "us_per_span_min": round(min(whole) / rows * 1e6, 1),
            "projection_us_per_span": round(statistics.median(projection) / rows * 1e6, 1),
            "ms_per_batch": round(statistics.median(whole) * 1e3, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, nargs="+", default=[2000, 50000], help="batch sizes (spans)")
    parser.add_argument("--batches", type=int, default=3, help="counted batches per size")
    parser.add_argument("--warm", type=int, default=2, help="batches per size analysed first, not counted")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    sizes = [measure(s, args.batches, args.warm) for s in args.spans]
    result: dict[str, Any] = {"sizes": sizes}
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        per_span = (b["ms_per_batch"] - a["ms_per_batch"]) / (b["spans"] - a["spans"]) * 1e3
        result["per_span_us"] = round(per_span, 1)
        result["fixed_ms"] = round(a["ms_per_batch"] - per_span * a["spans"] / 1e3, 1)
    if args.format == "json":
        print(json.dumps(result))
        return 0
    for s in sizes:
        print(f"{s['spans']:>7} spans/batch: {s['us_per_span']:6.1f} µs/span (min {s['us_per_span_min']}), "
              f"projection {s['projection_us_per_span']} µs/span, {s['ms_per_batch']} ms/batch")
    if "fixed_ms" in result:
        print(f"per batch {result['fixed_ms']} ms + {result['per_span_us']} µs per span")
    return 0


if __name__ == "__main__":
    sys.exit(main())
