"""Structure of traces: self time, client/server hops and critical paths.

Window-level work is set-at-a-time SQL in DuckDB (``span_metrics``); the
per-trace critical path is a walk over one span tree (``critical_path``).

*Self time* is the part of a span's duration covered by none of its children
(children clipped to the parent, so clock skew cannot make it negative and
parallel siblings are counted once): the rule language's ``self_time``, from
the same SQL (``dsl.covered_sql``, ``dsl.self_time_sql``).  A span with a
child in another service is a *client span*: its self time is network,
queueing and the callee's accept path, so it is charged to the callee
(``blame``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from dsl import AttrRef, AttrSource, column_name, self_time_sql
from dsl.spantree import covered_of_sql

METRICS_SQL = """
WITH src AS (
    SELECT trace_id, span_id, parent_span_id, service, name, start_ns, end_ns,
           coalesce(status_code, 0) AS status_code, coalesce(exception, false) AS exception,
           {pod} AS pod, {node} AS node
    FROM {table}
),
-- a dense integer per trace: the joins below key on it instead of the 16-byte trace id
tids AS (SELECT trace_id, CAST(row_number() OVER () AS BIGINT) AS _t FROM (SELECT DISTINCT trace_id FROM src)),
sp AS MATERIALIZED (SELECT tids._t, src.* FROM src JOIN tids ON tids.trace_id = src.trace_id),
-- each span beside its parent (p_span NULL where the parent is not in the batch), joined once for
-- the parent's columns, the covered time and the callee
pj AS MATERIALIZED (
    SELECT c.*, p.span_id AS p_span, p.service AS parent_service, p.name AS parent_name,
           p.start_ns AS p_start, p.end_ns AS p_end
    FROM sp c LEFT JOIN sp p ON c._t = p._t AND c.parent_span_id = p.span_id
),
covered AS ({covered}),  -- dsl.spantree: keyed by (trace, span_id), so copies of a span id share it
kids AS (  -- per parent: the callee service (a child in another service), errors below
    SELECT _t, parent_span_id AS pid,
           arg_max(CASE WHEN service <> parent_service THEN service END,
                   CASE WHEN service <> parent_service THEN end_ns - start_ns END) AS callee,
           count(*) AS n_children,
           bool_or(status_code = 2) AS child_error
    FROM pj WHERE p_span IS NOT NULL
    GROUP BY ALL
),
mt AS (
SELECT sp._t, sp.trace_id, sp.span_id, sp.parent_span_id, sp.service, sp.name, sp.start_ns, sp.end_ns,
       sp.status_code, sp.exception, sp.pod, sp.node,
       sp.end_ns - sp.start_ns AS dur,
       greatest({self_time}, 0) AS self_ns,  -- not below 0 for a span ending before it starts, or such a copy
       sp.parent_service, sp.parent_name,
       (sp.parent_span_id IS NOT NULL AND sp.p_span IS NULL) AS orphan,
       k.callee,
       coalesce(k.callee, sp.service) AS blame,
       coalesce(k.n_children, 0) AS n_children,
       coalesce(k.child_error, false) AS child_error
FROM pj sp
LEFT JOIN covered cv ON sp._t = cv._t AND sp.span_id = cv.span_id
LEFT JOIN kids k ON sp._t = k._t AND sp.span_id = k.pid
),
shapes AS (  -- per parent id: its call shape, read by the window's shape evidence and learned by the history
    SELECT _t, parent_span_id AS pid,
           -- sorting each group's list is cheaper than string_agg's ORDER BY (a sort per group)
           array_to_string(list_transform(list_sort(list(struct_pack(s := service, n := name))),
                                          lambda x: x.s || ':' || x.n), '|') AS sig,
           count(*) AS k, arg_max(blame, end_ns) AS last_blame
    FROM mt WHERE parent_span_id IS NOT NULL GROUP BY _t, parent_span_id
)
SELECT mt.* EXCLUDE (_t), coalesce(s.sig, '') AS shape_sig, coalesce(s.k, 0) AS shape_k, s.last_blame AS shape_last_blame
FROM mt LEFT JOIN shapes s ON mt._t = s._t AND mt.span_id = s.pid
"""

# the children joined to their parents in METRICS_SQL, clipped to them: covered_sql's input
_CLIPPED = ("SELECT _t, parent_span_id AS span_id, greatest(start_ns, p_start) AS cs, least(end_ns, p_end) AS ce "
            "FROM pj WHERE p_span IS NOT NULL")


# Where a span ran, when the spans say (OpenTelemetry resource attributes), as ``dsl.column_name`` names
# their columns: the pod (else the instance), the node (else the host).
POD_KEYS = ("k8s.pod.name", "service.instance.id")
NODE_KEYS = ("k8s.node.name", "host.name")


def placement_refs() -> tuple[AttrRef, ...]:
    """The resource attributes ``span_metrics`` reads a span's pod and node from."""
    return tuple(AttrRef(AttrSource.RESOURCE, k) for k in (*POD_KEYS, *NODE_KEYS))


def _placement(columns: Sequence[str], keys: tuple[str, ...]) -> str:
    present = [column_name(AttrRef(AttrSource.RESOURCE, k)) for k in keys]
    present = [c for c in present if c in columns]
    return f"CAST(coalesce({', '.join(present)}) AS VARCHAR)" if present else "CAST(NULL AS VARCHAR)"


def span_metrics(conn: duckdb.DuckDBPyConnection, spans: pa.Table) -> pa.Table:
    """Per span: duration, self time, parent, callee, the service its self time is charged to, its
    call shape (``shape_sig``: its children's operations, sorted; ``shape_k`` of them; ``shape_last_blame``: the service
    charged when the tree stops after its last child), and its pod and node where ``spans`` has their
    resource attributes (``placement_refs``; else null).  The call shape is computed here, once per
    batch, for both the window's shape evidence and the history that learns it."""
    conn.register("_lz_spans", spans)
    try:
        return span_metrics_of(conn, "_lz_spans", spans.column_names)
    finally:
        conn.unregister("_lz_spans")


def span_metrics_of(conn: duckdb.DuckDBPyConnection, source: str, columns: Sequence[str]) -> pa.Table:
    """``span_metrics`` of a relation on ``conn`` (a table's name or a parenthesized query) with
    ``columns``: the live localizer reads the released batch in place instead of copying its
    span columns out first."""
    sql = METRICS_SQL.format(table=source, covered=covered_of_sql(_CLIPPED, ("_t", "span_id")), self_time=self_time_sql("sp", "cv.covered"),
                             pod=_placement(columns, POD_KEYS), node=_placement(columns, NODE_KEYS))
    return conn.sql(sql).to_arrow_table()


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
