"""The localizer: where a failure or slowdown originates, without rules.

``localize_window`` ranks the services of a window of traces against a
baseline of normal traffic (``Baseline``); the evidence sources are in
``evidence``, span-tree structure in ``graph``.  ``blame`` turns a ranking into
per-trace candidates and symptoms, ``attribution`` finds the attribute values
anomalous spans share, and ``LocalizerAnalyzer`` runs it all in the live
pipeline against a baseline that keeps learning (``history``).
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb
import pyarrow as pa

from processor.localizer.analyzer import LocalizerAnalyzer
from processor.localizer.baseline import Baseline
from processor.localizer.blame import LocalizedBatch, blame_traces
from processor.localizer.graph import span_metrics
from processor.localizer.spans import read_spans
from processor.localizer.window import SOURCES, ServiceScore, rank_services


def localize_window(spans: pa.Table, baseline: Baseline | None = None,
                    sources: Iterable[str] = SOURCES) -> list[ServiceScore]:
    """Services of ``spans`` (``spans.SCHEMA`` columns), most likely root cause first.

    Without a baseline the window is compared with itself, which finds only
    what stands out within it.
    """
    conn = duckdb.connect()
    try:
        metrics = span_metrics(conn, spans)
        base = baseline if baseline is not None else Baseline.learn(conn, metrics)
        return rank_services(conn, metrics, base, sources)
    finally:
        conn.close()


__all__ = ["SOURCES", "Baseline", "LocalizedBatch", "LocalizerAnalyzer", "ServiceScore", "blame_traces",
           "localize_window", "rank_services", "read_spans", "span_metrics"]
