"""Attribution (BubbleUp-style): which attribute values the anomalous spans share beyond the usual.

Given a selection of anomalous spans in a batch (the candidates), every
projected attribute column is compared with how often each value is carried
*normally* by the same services: a value carried by most anomalous spans and
by few spans normally (``k8s.node.name=node-3`` in 92% of slow spans vs 10%
in the baseline) points at what they have in common — a node, a version, a
zone, an endpoint.

"Normally" is, per service, the learned baseline's share of the service's
spans carrying the value (``ValueBaseline``, kept by ``history``) when the
baseline knows the service, else the share among the batch's other spans of
that service.  The anomalous spans of several services are compared with the
mix of their services' references (the count expected if each behaved like
its service), so one service's constant attributes never look special.
All counting is one DuckDB query over the unpivoted columns; only the
significant values come back to Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from dsl import columns_of
from processor.localizer.evidence import wilson_lower

MIN_SUPPORT = 3    # anomalous spans that must carry a value before it is reported
MIN_LIFT = 0.2     # lower bound of its anomalous share minus its reference share

VALUES_SCHEMA = pa.schema([("service", pa.string()), ("key", pa.string()), ("val", pa.string()),
                           ("share", pa.float64())])
UNKNOWN_SCHEMA = pa.schema([("service", pa.string()), ("key", pa.string()), ("share", pa.float64())])
KNOWN_SCHEMA = pa.schema([("service", pa.string())])


@dataclass(frozen=True, slots=True)
class ValueBaseline:
    """How often attribute values are carried normally, per service (``History.values``).

    ``values``: (service, key, val, share) — key is the attribute's column name;
    ``unknown``: (service, key, share) — the most a value not listed can have
    (values evicted by the per-attribute cap); ``known``: the services the
    baseline has seen enough of to be compared with.
    """

    values: pa.Table
    unknown: pa.Table
    known: pa.Table

    @classmethod
    def empty(cls) -> ValueBaseline:
        return cls(VALUES_SCHEMA.empty_table(), UNKNOWN_SCHEMA.empty_table(), KNOWN_SCHEMA.empty_table())


COUNTS_SQL = """
WITH t AS (
    SELECT s.service, (x.span_id IS NOT NULL) AS hit, {casts}
    FROM {table} s LEFT JOIN lz_sel x ON x.trace_id = s.trace_id AND x.span_id = s.span_id
    WHERE s.service IN (SELECT DISTINCT a.service FROM {table} a
                        SEMI JOIN lz_sel y ON y.trace_id = a.trace_id AND y.span_id = a.span_id)
),
per AS (SELECT service, count(*) FILTER (WHERE hit) AS n_sel, count(*) FILTER (WHERE NOT hit) AS n_norm
        FROM t GROUP BY service HAVING count(*) FILTER (WHERE hit) > 0),
c AS (
    SELECT service, key, val, count(*) FILTER (WHERE hit) AS k_sel, count(*) FILTER (WHERE NOT hit) AS k_norm
    FROM (UNPIVOT (SELECT service, hit, {keys} FROM t) ON {keys} INTO NAME key VALUE val) GROUP BY ALL
),
v AS (SELECT key, val FROM c GROUP BY ALL HAVING sum(k_sel) >= $min_support),
r AS (  -- per candidate value and selected service: the service's reference share of the value
    SELECT v.key, v.val, per.n_sel, coalesce(c.k_sel, 0) AS k_sel, kn.service IS NOT NULL AS from_baseline,
           CASE WHEN kn.service IS NOT NULL THEN coalesce(bv.share, bu.share, 0.0)
                WHEN per.n_norm > 0 THEN coalesce(c.k_norm, 0) / per.n_norm END AS share
    FROM v CROSS JOIN per
    LEFT JOIN c ON c.service = per.service AND c.key = v.key AND c.val = v.val
    LEFT JOIN lz_known kn ON kn.service = per.service
    LEFT JOIN lz_bvalues bv ON bv.service = per.service AND bv.key = v.key AND bv.val = v.val
    LEFT JOIN lz_bunknown bu ON bu.service = per.service AND bu.key = v.key
)
SELECT key, val, sum(k_sel) AS k_sel, sum(n_sel) AS n_sel, sum(n_sel * share) AS expected,
       bool_or(from_baseline) AS any_baseline, bool_and(from_baseline) AS all_baseline
FROM r WHERE share IS NOT NULL   -- a service with no reference (no baseline, no normal spans) says nothing
GROUP BY key, val HAVING sum(k_sel) >= $min_support
"""

HITS_SQL = """
WITH t AS (
    SELECT s.trace_id, s.span_id, {casts}
    FROM {table} s SEMI JOIN lz_sel x ON x.trace_id = s.trace_id AND x.span_id = s.span_id
)
SELECT key, val, trace_id, span_id FROM (UNPIVOT t ON {keys} INTO NAME key VALUE val)
WHERE (key, val) IN (SELECT (key, val) FROM lz_found)
ORDER BY trace_id, span_id  -- each attribution's spans in one order, whatever the plan reading the batch
"""


@dataclass(frozen=True, slots=True)
class Attribution:
    """An attribute value over-represented among anomalous spans."""

    key: str
    value: str
    selected: int          # anomalous spans carrying it
    selected_total: int    # anomalous spans of the services compared
    expected: float        # how many of them would carry it if they behaved like their services normally
    score: float           # lower bound of the anomalous share minus the reference share
    reference: str = "baseline"   # "baseline", "batch" (the batch's normal spans) or "baseline and batch"
    spans: tuple[tuple[bytes, bytes], ...] = ()   # (trace id, span id) of the anomalous spans carrying it

    @property
    def share(self) -> float:
        return self.selected / self.selected_total if self.selected_total else 0.0

    @property
    def normal_share(self) -> float:
        """The share expected normally (the reference)."""
        return self.expected / self.selected_total if self.selected_total else 0.0

    @property
    def message(self) -> str:
        where = {"baseline": "in the baseline", "batch": "normally in this batch"}.get(
            self.reference, "normally (baseline and batch)")
        return (f"{self.key}={self.value} in {self.share:.0%} of anomalous spans vs {self.normal_share:.0%} {where} "
                f"({self.selected} of {self.selected_total} spans)")


def attribute(conn: duckdb.DuckDBPyConnection, table: str, selected: pa.Table, columns: Mapping[str, str],
              reference: ValueBaseline | None = None, min_support: int = MIN_SUPPORT, min_lift: float = MIN_LIFT,
              limit: int = 5) -> list[Attribution]:
    """Values of ``columns`` (attribute label -> column of ``table``) over-represented among the
    ``selected`` spans (a table of ``trace_id``, ``span_id``), strongest first, against
    ``reference`` (keyed by column name) where it knows the service, else within the batch.

    Columns missing from ``table`` are skipped; NULL (attribute absent) is never a value.
    """
    present = columns_of(conn, table)  # the caller's known batch, else bound
    labels = {col: label for label, col in columns.items() if col in present}
    if not labels or selected.num_rows == 0:
        return []
    casts = ", ".join(f"CAST({col} AS VARCHAR) AS {col}" for col in labels)
    keys = ", ".join(labels)
    ref = reference or ValueBaseline.empty()
    views = {"lz_sel": selected.select(["trace_id", "span_id"]), "lz_bvalues": ref.values,
             "lz_bunknown": ref.unknown, "lz_known": ref.known}
    for name, t in views.items():
        conn.register(name, t)
    try:
        rows = conn.execute(COUNTS_SQL.format(table=table, casts=casts, keys=keys),
                            {"min_support": min_support}).fetchall()
        found: list[tuple[str, Attribution]] = []   # (column, attribution)
        for col, val, k_sel, n_sel, expected, any_base, all_base in rows:
            score = wilson_lower(k_sel, n_sel) - expected / n_sel
            if score >= min_lift:
                where = "baseline" if all_base else "baseline and batch" if any_base else "batch"
                found.append((col, Attribution(labels[col], val, k_sel, n_sel, expected, score, where)))
        found.sort(key=lambda f: (-f[1].score, f[1].key, f[1].value))
        found = found[:limit]
        if not found:
            return []
        conn.register("lz_found", pa.table({"key": [col for col, _ in found], "val": [a.value for _, a in found]}))
        try:
            hits = conn.execute(HITS_SQL.format(table=table, casts=casts, keys=keys)).fetchall()
        finally:
            conn.unregister("lz_found")
    finally:
        for name in views:
            conn.unregister(name)
    spans: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {}
    for key, val, trace_id, span_id in hits:
        spans.setdefault((labels[key], val), []).append((trace_id, span_id))
    return [dataclasses.replace(a, spans=tuple(spans.get((a.key, a.value), ()))) for _, a in found]
