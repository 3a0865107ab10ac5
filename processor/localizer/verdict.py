"""Per-trace candidates from a window ranking, as the ``BatchVerdict`` the annotator writes.

Within each trace, the spans charged to a suspected service (``blame``) are
candidates, ranked by the service's window score, then by the span's own
evidence: an error origin first, then its self time above the operation's
baseline median.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from processor.analysis import BatchVerdict, Candidate, Evidence, TraceVerdict
from processor.localizer.baseline import Baseline
from processor.localizer.window import ServiceScore

SPANS_SQL = """
SELECT m.trace_id, m.span_id, m.parent_span_id, m.service, m.name, m.blame, m.start_ns, m.end_ns,
       (m.status_code = 2 AND NOT m.child_error) AS error_origin,
       greatest(m.self_ns - coalesce(o.self_p99, o.self_med, m.self_ns), 0)::DOUBLE AS excess_ns
FROM m LEFT JOIN base_ops o USING (service, name)
WHERE m.blame IN (SELECT unnest($suspects))
"""


def trace_verdicts(conn: duckdb.DuckDBPyConnection, metrics: pa.Table, baseline: Baseline,
                   ranking: list[ServiceScore], per_trace: int = 3) -> BatchVerdict:
    """Up to ``per_trace`` candidates in every trace that has a span charged to a suspect."""
    suspects = {r.service: r for r in ranking if r.score > 0}
    if not suspects:
        return BatchVerdict()
    conn.register("m", metrics)
    baseline.register(conn)
    try:
        rows = conn.execute(SPANS_SQL, {"suspects": list(suspects)}).fetchall()
        roots = dict(conn.sql("SELECT trace_id, arg_min(span_id, start_ns) FROM m "
                              "WHERE parent_span_id IS NULL GROUP BY ALL").fetchall())
    finally:
        for name in ("m", "base_ops", "base_shapes"):
            conn.unregister(name)
    by_trace: dict[bytes, list[tuple[float, Candidate]]] = {}
    for tid, sid, _pid, service, name, blame, start, end, origin, excess in rows:
        if not (origin or excess > 0):
            continue
        s = suspects[blame]
        key = s.score + (1.0 if origin else 0.0) + min(excess / 1e9, 1.0)
        why = "; ".join(e.message for e in s.evidence if e.message)
        ev = Evidence(source="localizer", message=f"{blame}: {why}" if why else blame,
                      confidence=s.confidence, score=key, layer="")
        by_trace.setdefault(tid, []).append((key, Candidate(sid, service, name, 0, start, end, (ev,))))
    traces = {}
    for tid, cands in by_trace.items():
        best = sorted(cands, key=lambda kc: -kc[0])[:per_trace]
        ranked = tuple(Candidate(c.span_id, c.service, c.name, c.depth, c.start_ns, c.end_ns, c.evidence, rank=i)
                       for i, (_, c) in enumerate(best, 1))
        traces[tid] = TraceVerdict(tid, roots.get(tid), ranked)
    return BatchVerdict(traces)
