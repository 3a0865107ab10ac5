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
    if len(key) != len(ref) or not key:
        raise ValueError("key and ref must pair up")
    keys = ", ".join(key)
    pairs = " AND ".join(f"ch.{r} = pa.{k}" for k, r in zip(key, ref))
    clipped = (f"SELECT {', '.join(f'ch.{r} AS {k}' for k, r in zip(key, ref))}, "
               f"greatest(ch.start_ns, pa.start_ns) AS cs, least(ch.end_ns, pa.end_ns) AS ce "
               f"FROM {spans} AS ch JOIN {spans} AS pa ON {pairs}")
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
