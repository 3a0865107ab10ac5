"""Structure of traces: self time, client/server hops and critical paths.

Window-level work is set-at-a-time SQL in DuckDB (``span_metrics``); the
per-trace critical path is a walk over one span tree (``critical_path``).

*Self time* is the part of a span's duration covered by none of its children
(children clipped to the parent, so clock skew cannot make it negative and
parallel siblings are counted once).  A span with a child in another service
is a *client span*: its self time is network, queueing and the callee's
accept path, so it is charged to the callee (``blame``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

METRICS_SQL = """
WITH sp AS (
    SELECT trace_id, span_id, parent_span_id, service, name, start_ns, end_ns,
           coalesce(status_code, 0) AS status_code, coalesce(exception, false) AS exception
    FROM {table}
),
ch AS (  -- children clipped to their parent
    SELECT c.trace_id, c.parent_span_id AS pid,
           greatest(c.start_ns, p.start_ns) AS s, least(c.end_ns, p.end_ns) AS e
    FROM sp c JOIN sp p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
),
ord AS (
    SELECT *, max(e) OVER (PARTITION BY trace_id, pid ORDER BY s, e
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_e
    FROM ch WHERE e > s
),
isl AS (
    SELECT *, sum(CASE WHEN prev_e IS NULL OR s > prev_e THEN 1 ELSE 0 END)
                  OVER (PARTITION BY trace_id, pid ORDER BY s, e ROWS UNBOUNDED PRECEDING) AS grp
    FROM ord
),
covered AS (
    SELECT trace_id, pid, sum(e2 - s2) AS covered
    FROM (SELECT trace_id, pid, grp, min(s) AS s2, max(greatest(e, s)) AS e2 FROM isl GROUP BY ALL)
    GROUP BY ALL
),
kids AS (  -- per parent: the callee service (a child in another service), errors below
    SELECT c.trace_id, c.parent_span_id AS pid,
           arg_max(CASE WHEN c.service <> p.service THEN c.service END,
                   CASE WHEN c.service <> p.service THEN c.end_ns - c.start_ns END) AS callee,
           count(*) AS n_children,
           bool_or(c.status_code = 2) AS child_error
    FROM sp c JOIN sp p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
    GROUP BY ALL
)
SELECT sp.trace_id, sp.span_id, sp.parent_span_id, sp.service, sp.name, sp.start_ns, sp.end_ns,
       sp.status_code, sp.exception,
       sp.end_ns - sp.start_ns AS dur,
       greatest(sp.end_ns - sp.start_ns - coalesce(cv.covered, 0), 0) AS self_ns,
       p.service AS parent_service, p.name AS parent_name,
       (sp.parent_span_id IS NOT NULL AND p.span_id IS NULL) AS orphan,
       k.callee,
       coalesce(k.callee, sp.service) AS blame,
       coalesce(k.n_children, 0) AS n_children,
       coalesce(k.child_error, false) AS child_error
FROM sp
LEFT JOIN sp p ON sp.trace_id = p.trace_id AND sp.parent_span_id = p.span_id
LEFT JOIN covered cv ON sp.trace_id = cv.trace_id AND sp.span_id = cv.pid
LEFT JOIN kids k ON sp.trace_id = k.trace_id AND sp.span_id = k.pid
"""


def span_metrics(conn: duckdb.DuckDBPyConnection, spans: pa.Table) -> pa.Table:
    """Per span: duration, self time, parent, callee and the service its self time is charged to."""
    conn.register("_lz_spans", spans)
    try:
        return conn.sql(METRICS_SQL.format(table="_lz_spans")).to_arrow_table()
    finally:
        conn.unregister("_lz_spans")


@dataclass(frozen=True, slots=True)
class Span:
    """One span of a trace, as the per-trace walks need it."""

    span_id: bytes
    parent_span_id: bytes | None
    service: str
    name: str
    start_ns: int
    end_ns: int


def children_of(spans: Sequence[Span]) -> dict[bytes | None, list[Span]]:
    """Children by parent id (None: roots, including spans whose parent is missing)."""
    ids = {s.span_id for s in spans}
    out: dict[bytes | None, list[Span]] = defaultdict(list)
    for s in sorted(spans, key=lambda s: (s.start_ns, s.end_ns)):
        out[s.parent_span_id if s.parent_span_id in ids else None].append(s)
    return out


def critical_path(root: Span, children: dict[bytes | None, list[Span]]) -> list[Span]:
    """The spans that determine ``root``'s end (CRISP): from the root, repeatedly the child
    that finished last before the current point, then the one before it that ended before
    that child started, and so on; parallel siblings that finished earlier are off the path."""
    path = [root]
    _walk(root, root.end_ns, children, path)
    return path


def _walk(span: Span, until: int, children: dict[bytes | None, list[Span]], path: list[Span]) -> None:
    point = min(span.end_ns, until)
    kids = [c for c in children.get(span.span_id, []) if c.start_ns < point]
    while kids:
        last = max(kids, key=lambda c: min(c.end_ns, point))
        path.append(last)
        _walk(last, point, children, path)
        point = max(min(last.start_ns, point), span.start_ns)
        kids = [c for c in kids if c is not last and c.end_ns <= point and c.start_ns < point]
