"""Structure of traces: self time, client/server hops and critical paths.

Window-level work is set-at-a-time SQL in DuckDB (``span_metrics``); the
per-trace critical path is a walk over one span tree (``critical_path``).

*Self time* is the part of a span's duration covered by none of its children
(children clipped to the parent, so clock skew cannot make it negative and
parallel siblings are counted once): the rule language's ``self_time``, from
the same SQL (``dsl.covered_sql``, ``dsl.self_time_sql``; a span with one
child, the commonest parent, is covered by that child's clipped interval
without the sweep).  A span with a
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
import pyarrow.compute as pc

from dsl import AttrRef, AttrSource, column_name, self_time_sql
from dsl.api import parsed
from dsl.spantree import covered_of_sql
from processor.localizer.reads import Reads

METRICS_SQL = """
WITH src AS (
    SELECT trace_id, span_id, parent_span_id, service, name, start_ns, end_ns,
           coalesce(status_code, 0) AS status_code, coalesce(exception, false) AS exception,
           {pod} AS pod, {node} AS node,
           {tk} AS tk, {sk} AS sk, {pk} AS pk  -- the keys every join and grouping below is on
    FROM {table}
),
-- each span beside its parent (p_span NULL where the parent is not in the batch), joined once for
-- the parent's columns and everything per parent below
pj AS MATERIALIZED (
    SELECT c.*, p.sk AS p_span, p.service AS parent_service, p.start_ns AS p_start, p.end_ns AS p_end
    FROM src c LEFT JOIN src p ON c.tk = p.tk AND c.pk = p.sk
),
-- per parent id, one aggregation over its children: the callee (its longest child in another service:
-- its service, pod and node), errors below, and for a parent of one child (most of them: every client
-- span) its call shape and the time it covers, which need no list or sweep
kids AS MATERIALIZED (
    SELECT tk, pk AS pid,
           arg_max(CASE WHEN service <> parent_service THEN service END,
                   CASE WHEN service <> parent_service THEN end_ns - start_ns END) AS callee,
           arg_max(CASE WHEN service <> parent_service THEN pod END,
                   CASE WHEN service <> parent_service THEN end_ns - start_ns END) AS callee_pod,
           arg_max(CASE WHEN service <> parent_service THEN node END,
                   CASE WHEN service <> parent_service THEN end_ns - start_ns END) AS callee_node,
           count(*) AS n_children,
           -- the last child to end: its key, to read its own callee below, and its service (arg_max_null:
           -- both of the same row, a null one too; one arg_max of both as a struct costs twice as much here)
           arg_max_null(sk, end_ns) AS last_sk, arg_max_null(service, end_ns) AS last_service,
           bool_or(status_code = 2) AS child_error,
           any_value(service || ':' || name) AS one_sig,
           any_value(greatest(0, least(end_ns, p_end) - greatest(start_ns, p_start))) AS one_covered
    FROM pj WHERE p_span IS NOT NULL
    GROUP BY tk, pk
),
-- the children of parents with several: their clipped intervals, for the sorted shape and the sweep
fan AS (
    SELECT c.tk, c.pk, c.service, c.name,
           greatest(c.start_ns, c.p_start) AS cs, least(c.end_ns, c.p_end) AS ce
    FROM pj c SEMI JOIN kids k ON c.tk = k.tk AND c.pk = k.pid AND k.n_children > 1
    WHERE c.p_span IS NOT NULL
),
shapes AS (
    SELECT tk, pk AS pid,
           -- sorting each group's list is cheaper than string_agg's ORDER BY (a sort per group)
           array_to_string(list_transform(list_sort(list(struct_pack(s := service, n := name))),
                                          lambda x: x.s || ':' || x.n), '|') AS sig
    FROM fan GROUP BY tk, pk
),
-- the parents whose last child has no service, whose blame is then its callee's, or where it has
-- none the blame of the last child that has one: every child's blame, as per_parent reads the rest
unnamed AS (
    SELECT c.tk, c.pk AS pid, arg_max(coalesce(k.callee, c.service), c.end_ns) AS last_blame
    FROM pj c SEMI JOIN kids p ON c.tk = p.tk AND c.pk = p.pid AND p.last_service IS NULL
    LEFT JOIN kids k ON c.tk = k.tk AND c.sk = k.pid
    WHERE c.p_span IS NOT NULL
    GROUP BY c.tk, c.pk
),
covered AS ({covered}),  -- dsl.spantree: keyed by (trace, span id), so copies of a span id share it
per_parent AS (
    SELECT k.tk, k.pid, k.callee, k.callee_pod, k.callee_node, k.n_children, k.child_error,
           CASE WHEN k.n_children = 1 THEN k.one_sig ELSE s.sig END AS sig,
           CASE WHEN k.n_children = 1 THEN k.one_covered ELSE cv.covered END AS covered,
           -- the service charged when the tree stops after the last child: that child's blame (its
           -- callee, from its own row of kids, else its service), read from kids joined to itself
           -- rather than by grouping every span's blame per parent and joining that back
           CASE WHEN k.last_service IS NOT NULL THEN coalesce(l.callee, k.last_service)
                ELSE u.last_blame END AS last_blame
    FROM kids k
    LEFT JOIN shapes s ON s.tk = k.tk AND s.pid = k.pid
    LEFT JOIN covered cv ON cv.tk = k.tk AND cv.sk = k.pid
    LEFT JOIN kids l ON l.tk = k.tk AND l.pid = k.last_sk
    LEFT JOIN unnamed u ON u.tk = k.tk AND u.pid = k.pid
)
SELECT sp.trace_id, sp.span_id, sp.parent_span_id, sp.service, sp.name, sp.start_ns, sp.end_ns,
       sp.status_code, sp.exception, sp.pod, sp.node,
       sp.end_ns - sp.start_ns AS dur,
       greatest({self_time}, 0) AS self_ns,  -- not below 0 for a span ending before it starts, or such a copy
       sp.parent_service,
       (sp.parent_span_id IS NOT NULL AND sp.p_span IS NULL) AS orphan,
       k.callee, k.callee_pod, k.callee_node,
       coalesce(k.callee, sp.service) AS blame,
       coalesce(k.n_children, 0) AS n_children,
       coalesce(k.child_error, false) AS child_error,
       -- the call shape, read by the window's shape evidence and learned by the history
       coalesce(k.sig, '') AS shape_sig, coalesce(k.n_children, 0) AS shape_k,
       k.last_blame AS shape_last_blame
FROM pj sp
LEFT JOIN per_parent k ON sp.tk = k.tk AND sp.sk = k.pid
"""

# the children of parents with several, clipped to them: covered_sql's input (a parent of one child
# covers its clipped interval, METRICS_SQL's one_covered)
_CLIPPED = "SELECT tk, pk AS sk, cs, ce FROM fan"


def _fixed(column: str, width: int, kind: str) -> str:
    """``column``, a blob of ``width`` bytes, as the integer of the same bytes (``kind``: a bijection,
    so integer equality is the blobs' equality); NULL stays NULL, and any other length fails the
    statement (``INVALID_KEY``) rather than share an integer with a different blob."""
    # a 16-byte blob casts to a UUID byte for byte; an 8-byte one to BIGINT only through BIT
    cast = f"CAST({column} AS UUID)" if kind == "UUID" else f"CAST(CAST({column} AS BIT) AS {kind})"
    return (f"CASE WHEN {column} IS NULL THEN NULL WHEN octet_length({column}) = {width} "
            f"THEN {cast} ELSE error('{INVALID_KEY}') END")


INVALID_KEY = "span_metrics: an id of unexpected length"
# The keys METRICS_SQL joins and groups on: the ids as fixed-width integers (OTLP's trace ids are 16
# bytes, span ids 8: the receiver refuses others), cheaper to hash and compare than blobs; or the blobs
# themselves, for a batch with ids of other lengths (a corpus read from files).
_INT_KEYS = {"tk": _fixed("trace_id", 16, "UUID"), "sk": _fixed("span_id", 8, "BIGINT"),
             "pk": _fixed("parent_span_id", 8, "BIGINT")}
_BLOB_KEYS = {"tk": "trace_id", "sk": "span_id", "pk": "parent_span_id"}


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
    """Per span: duration, self time, parent, callee (its longest child in another service: ``callee``,
    and ``callee_pod`` and ``callee_node``, where ``shift`` charges its wire time), the service its self
    time is charged to, its call shape (``shape_sig``: its children's operations, sorted; ``shape_k`` of
    them; ``shape_last_blame``: the service
    charged when the tree stops after its last child), and its pod and node where ``spans`` has their
    resource attributes (``placement_refs``; else null).  The call shape is computed here, once per
    batch, for both the window's shape evidence and the history that learns it."""
    conn.register("_lz_spans", spans)
    try:
        return span_metrics_of(conn, "_lz_spans", spans.column_names)
    finally:
        conn.unregister("_lz_spans")


def span_metrics_of(conn: duckdb.DuckDBPyConnection, source: str, columns: Sequence[str],
                    reads: Reads | None = None) -> pa.Table:
    """``span_metrics`` of a relation on ``conn`` (a table's name or a parenthesized query) with
    ``columns``: the live localizer reads the released batch in place instead of copying its
    span columns out first, from a relation it keeps (``reads``: the statement is bound once,
    not ~4 ms every batch).  Joined on the ids as integers (``_INT_KEYS``), or where an id has
    another length, which fails that statement, on the blobs."""
    try:
        return _run(conn, _sql(source, columns, _INT_KEYS), reads)
    except duckdb.InvalidInputException as err:
        if INVALID_KEY not in str(err):
            raise
        return _run(conn, _sql(source, columns, _BLOB_KEYS), reads)


def _sql(source: str, columns: Sequence[str], keys: dict[str, str]) -> str:
    return METRICS_SQL.format(table=source, covered=covered_of_sql(_CLIPPED, ("tk", "sk")),
                              self_time=self_time_sql("sp", "k.covered"),
                              pod=_placement(columns, POD_KEYS), node=_placement(columns, NODE_KEYS), **keys)


def _run(conn: duckdb.DuckDBPyConnection, sql: str, reads: Reads | None) -> pa.Table:
    if reads is not None:
        return reads.rows(conn, sql)
    return conn.sql(parsed(sql)).to_arrow_table()


def any_failed(metrics: pa.Table) -> bool:
    """Whether a span of ``span_metrics`` has status ERROR (2): the readers of error origins and
    error details skip their statements for a batch without one (healthy traffic's common case)."""
    return bool(pc.any(pc.equal(metrics.column("status_code"), 2)).as_py())


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
