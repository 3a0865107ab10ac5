"""A trace's tree in SQL, defined once: a span's self time and the trace's root span.

The rule language's prepare step (``dsl.compiler``: ``self_time``,
``trace.root_service``, ``trace.root_name``) and the processor (the
localizer's span metrics and verdict root, the rule evaluator's verdict root)
key spans differently — dense integer rows over a batch, or trace and span
ids — so these builders take the key columns and return SQL text to embed.
Column names are the caller's, never user input.
"""

from __future__ import annotations

from collections.abc import Sequence


def covered_sql(spans: str, key: Sequence[str], ref: Sequence[str]) -> str:
    """A query: per span of ``spans`` with children, the length of the union of
    its children's intervals, each clipped to the span's own interval (so
    clock skew cannot push a child outside it, and parallel children count
    once).  Children are the rows whose ``ref`` columns equal a row's ``key``
    columns; the result has the ``key`` columns (named as in ``key``) and
    ``covered`` (a sum of BIGINTs, HUGEINT).

    A span whose key several rows share (a duplicated span id) covers the
    union of the children clipped to each of them.  Empty or inverted
    intervals cover nothing.  The union is a sweep in start order: each child
    adds what lies beyond the furthest end of those that started before it."""
    return covered_of_sql(clipped_sql(spans, key, ref), key)


def clipped_sql(spans: str, key: Sequence[str], ref: Sequence[str]) -> str:
    """A query: each child of ``spans`` joined to its parent (``covered_sql``'s ``key`` and ``ref``),
    with the parent's ``key`` columns and the child's interval clipped to the parent's (``cs``, ``ce``)."""
    if len(key) != len(ref) or not key:
        raise ValueError("key and ref must pair up")
    pairs = " AND ".join(f"ch.{r} = pa.{k}" for k, r in zip(key, ref))
    return (f"SELECT {', '.join(f'ch.{r} AS {k}' for k, r in zip(key, ref))}, "
            f"greatest(ch.start_ns, pa.start_ns) AS cs, least(ch.end_ns, pa.end_ns) AS ce "
            f"FROM {spans} AS ch JOIN {spans} AS pa ON {pairs}")


def covered_by_fan_sql(clipped: str, key: Sequence[str]) -> str:
    """``covered_of_sql`` of ``clipped`` (a relation's name: it is read twice), where a parent with one
    child interval that is not empty covers that interval, ``ce - cs``, without the sweep: the
    sweep's window sorts every parent's children, and in many traces most parents call one
    child (a chain of calls).  The same values: the sweep adds ``ce - cs`` for a lone interval."""
    keys = ", ".join(key)
    on = " AND ".join(f"n.{k} = c.{k}" for k in key)
    fan = f"(SELECT {keys}, count(*) AS n, sum(ce - cs) AS one FROM {clipped} WHERE ce > cs GROUP BY {keys})"
    several = f"(SELECT c.* FROM {clipped} AS c SEMI JOIN {fan} AS n ON {on} AND n.n > 1)"
    return f"SELECT {keys}, one AS covered FROM {fan} WHERE n = 1 UNION ALL {covered_of_sql(several, key)}"


def covered_of_sql(clipped: str, key: Sequence[str]) -> str:
    """``covered_sql`` from its children already joined to their parents: ``clipped`` is a query
    with the parent's ``key`` columns and each child's interval clipped to the parent's (``cs``,
    ``ce``), for a caller that joins children to parents once for several uses."""
    keys = ", ".join(key)
    swept = (f"SELECT {keys}, cs, ce, max(ce) OVER (PARTITION BY {keys} ORDER BY cs, ce "
             f"ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach FROM ({clipped}) WHERE ce > cs")
    return (f"SELECT {keys}, sum(greatest(0, ce - greatest(cs, coalesce(reach, cs)))) AS covered "
            f"FROM ({swept}) GROUP BY {keys}")


def self_time_sql(span: str, covered: str) -> str:
    """A span's self time: its duration less ``covered`` (``covered_sql``'s
    column, NULL for a span without children).  Negative only for a span that
    ends before it starts, or a duplicated span id whose copies' children
    cover more than this copy."""
    return f"(({span}.end_ns - {span}.start_ns) - coalesce({covered}, 0))"


def no_parent_sql(parent_id: str) -> str:
    """Whether a span names no parent: OTLP leaves ``parent_span_id`` empty; NULL counts the same."""
    return f"({parent_id} IS NULL OR octet_length({parent_id}) = 0)"


def root_key_sql(span: str, no_parent: str, parent_found: str) -> str:
    """The ordering key whose least value over a trace's spans is the trace's
    root span (``arg_min(x, key)``): ``span`` is the span's alias,
    ``no_parent`` its ``no_parent_sql``, ``parent_found`` whether the parent
    it names is in the trace.

    The root is the earliest span that names no parent (the root as
    instrumented).  While that has not arrived (or was lost), it is the
    earliest span whose parent is missing from the trace: the head of the
    earliest fragment, the topmost span there is, and the one nearest the
    real root since callers start before their callees.  A span whose parent
    is present is never picked while there is either, however early clock
    skew makes it start; a span that names no parent wins over fragment heads
    that start before it (their parents exist somewhere).  Several
    candidates of one kind (a broken trace): the earliest, on a tie the one
    that ends first.  Only when every span's parent is present (a cycle in
    bad data) is it the earliest span of all."""
    rank = f"CASE WHEN {no_parent} THEN 0 WHEN {parent_found} THEN 2 ELSE 1 END"
    return f"({rank}, {span}.start_ns, {span}.end_ns)"


def antecedents_sql(spans: str, targets: str, max_depth: int = 256) -> str:
    """A query: for each target span, its *antecedents* — the spans of its trace whose output
    could have reached it (its causal past).

    ``spans`` and ``targets`` are relations with ``trace_id`` and ``span_id``; ``spans`` also
    has ``parent_span_id``, ``start_ns`` and ``end_ns``.  The antecedents of a span B are
    B's descendants (they ran inside it), and for B and each of its ancestors X (up to
    ``max_depth`` levels) the earlier siblings of X — children of X's parent that ended
    before X started — with their subtrees.  The parent chain itself is not there: an
    ancestor is still running when B fails.  Result columns: ``trace_id``, ``span_id`` (the
    target), ``antecedent_id`` and ``distance`` (0 inside B, 1 an earlier sibling of B or
    below one, k + 1 an earlier sibling of B's k-th ancestor or below one; the least when
    several paths reach a span).  Cycles in bad data stop: each step keeps sets."""
    return f"""
WITH RECURSIVE
chain(trace_id, target, x, up) AS (
    SELECT t.trace_id, t.span_id, t.span_id, 0 FROM {targets} t
    UNION
    SELECT c.trace_id, c.target, s.parent_span_id, c.up + 1
    FROM chain c JOIN {spans} s ON s.trace_id = c.trace_id AND s.span_id = c.x
    WHERE NOT {no_parent_sql("s.parent_span_id")} AND c.up < {int(max_depth)}
),
heads AS (
    SELECT c.trace_id, c.target, k.span_id AS a, 0 AS distance
    FROM chain c JOIN {spans} k ON k.trace_id = c.trace_id AND k.parent_span_id = c.x
    WHERE c.up = 0
    UNION
    SELECT c.trace_id, c.target, sib.span_id, c.up + 1
    FROM chain c JOIN {spans} x ON x.trace_id = c.trace_id AND x.span_id = c.x
    JOIN {spans} sib ON sib.trace_id = x.trace_id AND sib.parent_span_id = x.parent_span_id
    WHERE NOT {no_parent_sql("x.parent_span_id")} AND sib.span_id <> x.span_id AND sib.end_ns <= x.start_ns
),
below(trace_id, target, a, distance) AS (
    SELECT trace_id, target, a, distance FROM heads
    UNION
    SELECT b.trace_id, b.target, k.span_id, b.distance
    FROM below b JOIN {spans} k ON k.trace_id = b.trace_id AND k.parent_span_id = b.a
)
SELECT trace_id, target AS span_id, a AS antecedent_id, min(distance) AS distance
FROM below WHERE a <> target GROUP BY ALL
"""
