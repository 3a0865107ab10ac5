"""Attribution (BubbleUp-style): which attribute values the anomalous spans share.

Given a selection of anomalous spans in a batch (the candidates), every
projected attribute column is compared between the selection and the normal
spans of the same services: a value carried by most anomalous spans and few
normal ones (``k8s.node.name=node-3`` in 92% of slow spans vs 10% normally)
points at what they have in common — a node, a version, a zone, an endpoint.
Comparing within the selection's services keeps a service's own constant
attributes from looking special.  All counting is one DuckDB query over the
unpivoted columns; only the significant values come back to Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from processor.localizer.scoring import wilson_lower

MIN_SUPPORT = 3    # anomalous spans that must carry a value before it is reported
MIN_LIFT = 0.2     # lower bound of its anomalous share minus its normal share

COUNTS_SQL = """
WITH t AS (
    SELECT s.trace_id, s.span_id, (x.span_id IS NOT NULL) AS hit, {casts}
    FROM {table} s LEFT JOIN lz_sel x ON x.trace_id = s.trace_id AND x.span_id = s.span_id
    WHERE s.service IN (SELECT DISTINCT a.service FROM {table} a
                        SEMI JOIN lz_sel y ON y.trace_id = a.trace_id AND y.span_id = a.span_id)
),
tot AS (SELECT count(*) FILTER (WHERE hit) AS n_sel, count(*) FILTER (WHERE NOT hit) AS n_norm FROM t),
u AS (UNPIVOT (SELECT hit, {keys} FROM t) ON {keys} INTO NAME key VALUE val)
SELECT u.key, u.val, count(*) FILTER (WHERE u.hit) AS k_sel, count(*) FILTER (WHERE NOT u.hit) AS k_norm,
       any_value(tot.n_sel) AS n_sel, any_value(tot.n_norm) AS n_norm
FROM u, tot GROUP BY u.key, u.val HAVING count(*) FILTER (WHERE u.hit) >= $min_support
"""

HITS_SQL = """
WITH t AS (
    SELECT s.trace_id, s.span_id, {casts}
    FROM {table} s SEMI JOIN lz_sel x ON x.trace_id = s.trace_id AND x.span_id = s.span_id
)
SELECT key, val, trace_id, span_id FROM (UNPIVOT t ON {keys} INTO NAME key VALUE val)
WHERE (key, val) IN (SELECT (key, val) FROM lz_found)
"""


@dataclass(frozen=True, slots=True)
class Attribution:
    """An attribute value over-represented among anomalous spans."""

    key: str
    value: str
    selected: int          # anomalous spans carrying it
    selected_total: int
    normal: int            # normal spans (of the same services) carrying it
    normal_total: int
    score: float           # lower bound of the anomalous share minus the normal share
    spans: tuple[tuple[bytes, bytes], ...] = ()   # (trace id, span id) of the anomalous spans carrying it

    @property
    def share(self) -> float:
        return self.selected / self.selected_total if self.selected_total else 0.0

    @property
    def normal_share(self) -> float:
        return self.normal / self.normal_total if self.normal_total else 0.0

    @property
    def message(self) -> str:
        return (f"{self.key}={self.value} in {self.share:.0%} of anomalous spans vs {self.normal_share:.0%} "
                f"normally ({self.selected} of {self.selected_total} vs {self.normal} of {self.normal_total})")


def attribute(conn: duckdb.DuckDBPyConnection, table: str, selected: pa.Table, columns: Mapping[str, str],
              min_support: int = MIN_SUPPORT, min_lift: float = MIN_LIFT, limit: int = 5) -> list[Attribution]:
    """Values of ``columns`` (attribute label -> column of ``table``) over-represented among the
    ``selected`` spans (a table of ``trace_id``, ``span_id``), strongest first.

    Columns missing from ``table`` are skipped; NULL (attribute absent) is never a value.
    """
    present = set(conn.sql(f"SELECT * FROM {table} LIMIT 0").columns)
    cols = {label: col for label, col in columns.items() if col in present}
    if not cols or selected.num_rows == 0:
        return []
    labels = list(cols)
    casts = ", ".join(f"CAST({cols[label]} AS VARCHAR) AS k{i}" for i, label in enumerate(labels))
    keys = ", ".join(f"k{i}" for i in range(len(labels)))
    conn.register("lz_sel", selected.select(["trace_id", "span_id"]))
    try:
        rows = conn.execute(COUNTS_SQL.format(table=table, casts=casts, keys=keys),
                            {"min_support": min_support}).fetchall()
        found = []
        for key, val, k_sel, k_norm, n_sel, n_norm in rows:
            if not n_norm:
                continue   # nothing normal to compare with
            score = wilson_lower(k_sel, n_sel) - k_norm / n_norm
            if score >= min_lift:
                found.append(Attribution(labels[int(key[1:])], val, k_sel, n_sel, k_norm, n_norm, score))
        found.sort(key=lambda a: (-a.score, a.key, a.value))
        found = found[:limit]
        if not found:
            return []
        conn.register("lz_found", pa.table({"key": [f"k{labels.index(a.key)}" for a in found],
                                            "val": [a.value for a in found]}))
        try:
            hits = conn.execute(HITS_SQL.format(table=table, casts=casts, keys=keys)).fetchall()
        finally:
            conn.unregister("lz_found")
    finally:
        conn.unregister("lz_sel")
    spans: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {}
    for key, val, trace_id, span_id in hits:
        spans.setdefault((labels[int(key[1:])], val), []).append((trace_id, span_id))
    return [Attribution(a.key, a.value, a.selected, a.selected_total, a.normal, a.normal_total, a.score,
                        tuple(spans.get((a.key, a.value), ()))) for a in found]
