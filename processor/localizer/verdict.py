"""Per-trace candidates from a window ranking, as the ``BatchVerdict`` the annotator writes.

Kept for callers of ``trace_verdicts``; the work is ``blame.blame_traces``
(error origins, latency blame on the critical path, symptoms), which the live
analyzer and ``faulttrace eval`` share.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from processor.localizer.baseline import Baseline
from processor.localizer.blame import LocalizedBatch, blame_traces
from processor.localizer.window import ServiceScore


def trace_verdicts(conn: duckdb.DuckDBPyConnection, metrics: pa.Table, baseline: Baseline,
                   ranking: list[ServiceScore], per_trace: int = 3) -> LocalizedBatch:
    """Up to ``per_trace`` candidates in every trace with evidence against a span."""
    return blame_traces(conn, metrics, baseline, ranking, per_trace)
