"""Many rules of one variable as bit columns of a few scans of the batch.

A rule set's statements once cost a batch about what their rules cost alone:
each rule was its own pipeline over the whole prepared table, its
quantifiers decorrelated into joins of their own (2,000 rules: ~12 ms a rule
over 100,000 spans, ``tests/dsl/bench_rules.py``).  Most rules are *local*:
one variable, a condition on that span, quantifiers that only count or
aggregate related spans.  For those:

- every distinct *shareable* quantifier (``dsl.compiler.shareable``: no
  quantifier inside, no ``by``) is computed once per batch, as a column of
  ``SHARED``: grouped by the relation's key when its condition reads only
  its own variable (children by parent, ``span`` by trace, descendants and
  ancestors through the closure), else over the relation's join grouped by
  the quantifying span; the aggregates of one source share one scan
  (``FILTER`` aggregates side by side);
- every distinct condition becomes one bit of a BIGINT mask column; a scan
  computes up to ``MASKS_PER_SCAN`` masks and returns only the rows with a
  bit set;
- messages are rendered by one statement, once per distinct (message, span),
  only for the spans that fired.

A rule with a quantifier that cannot be shared, with several variables or
with ``explains`` runs as before (``rest``): as its own statement.  The findings
are the same (``tests/dsl/test_columnar.py`` compares both ways).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dsl import ir
from dsl.compiler import (
    Aggregate,
    CompiledRule,
    NotLocal,
    compile_aggregate,
    compile_local,
    render_statement,
    renumber,
    scan_statement,
    shareable,
    shared_column,
    shared_statement,
)

MASK_BITS = 63  # conditions per BIGINT mask (the sign bit is left alone)
MASKS_PER_SCAN = 8  # masks per scan statement: measured, tests/dsl/bench_rules.py --masks-per-scan
FIRED = "__ft_fired"  # the (span, message) pairs to render, an Arrow table registered on the connection


def _key(sql: str, params: tuple[object, ...]) -> tuple[str, tuple[tuple[str, object], ...]]:
    """Identity of compiled SQL: its text and its parameters with their types (1, 1.0 and True are equal in Python)."""
    return sql, tuple((type(p).__name__, p) for p in params)


@dataclass(frozen=True, slots=True)
class _Scan:
    masks: tuple[tuple[int, ...], ...]  # per mask column, the condition index of each bit
    params: tuple[object, ...]
    parsed: duckdb.Statement


@dataclass(frozen=True, slots=True)
class Fired:
    """The rows one evaluation returns: per rule index, the ``_row`` of each span it fired on,
    and per (message index, row) the span's trace id, span id, depth and rendered message."""

    hits: list[tuple[int, pa.Array]]
    spans: dict[tuple[int, int], tuple[bytes, bytes, int, str]]  # key: (message index, row)


@dataclass(frozen=True)
class ColumnarPlan:
    """The local rules of a rule set as shared aggregates, condition bits and messages;
    ``rest`` the rules that run as their own statements."""

    rules: tuple[CompiledRule, ...]
    rest: tuple[CompiledRule, ...]
    conditions: tuple[tuple[int, ...], ...]  # per distinct condition, the indexes (in ``rules``) of its rules
    message_of: tuple[int, ...]  # per rule, the index of its distinct message
    shared: tuple[str, tuple[object, ...]] | None  # the statement building SHARED, with its parameters
    scans: tuple[_Scan, ...]
    render: str  # render_statement over FIRED
    render_params: tuple[object, ...]

    @classmethod
    def of(cls, rules: Iterable[CompiledRule], checked: dict[str, ir.CheckedRule],
           masks_per_scan: int = MASKS_PER_SCAN) -> ColumnarPlan:
        local: list[CompiledRule] = []
        rest: list[CompiledRule] = []
        aggregates: dict[object, int] = {}
        agg_list: list[Aggregate] = []
        conds: dict[object, list[int]] = {}
        cond_frags = []
        messages: dict[object, int] = {}
        msg_frags = []
        message_of: list[int] = []
        for rule in rules:
            source = checked.get(rule.id)
            if source is None or len(source.bindings) != 1 or source.explains:
                rest.append(rule)
                continue
            outer = source.bindings[0].var

            def column(q: ir.Quant, outer: str = outer) -> str | None:
                if not shareable(q, outer):
                    return None
                agg = compile_aggregate(q)
                k = (agg.source, agg.empty, _key(agg.frag.sql, agg.frag.params))
                if k not in aggregates:
                    aggregates[k] = len(agg_list)
                    agg_list.append(agg)
                return shared_column(aggregates[k])

            try:
                cond, msg = compile_local(source, column)
            except NotLocal:
                rest.append(rule)
                continue
            i = len(local)
            local.append(rule)
            ck = _key(cond.sql, cond.params)
            if ck not in conds:
                conds[ck] = []
                cond_frags.append(cond)
            conds[ck].append(i)
            mk = _key(msg.sql, msg.params)
            if mk not in messages:
                messages[mk] = len(msg_frags)
                msg_frags.append(msg)
            message_of.append(messages[mk])
        has_shared = bool(agg_list)
        # aggregates registered while compiling a rule that then went to ``rest`` are computed for nothing: harmless
        scans = []
        per_scan = MASK_BITS * masks_per_scan
        for start in range(0, len(cond_frags), per_scan):
            chunk = list(range(start, min(start + per_scan, len(cond_frags))))
            texts, params = renumber([cond_frags[c] for c in chunk])
            masks = [chunk[m:m + MASK_BITS] for m in range(0, len(chunk), MASK_BITS)]
            sql = scan_statement([[texts[c - start] for c in mask] for mask in masks], has_shared)
            scans.append(_Scan(tuple(tuple(m) for m in masks), params, duckdb.extract_statements(sql)[0]))
        texts, render_params = renumber(msg_frags)
        return cls(tuple(local), tuple(rest), tuple(tuple(v) for v in conds.values()), tuple(message_of),
                   shared_statement(agg_list) if has_shared else None, tuple(scans),
                   render_statement(FIRED, texts, has_shared) if texts else "", render_params)

    def run(self, conn: duckdb.DuckDBPyConnection) -> Fired:
        """The rules' firings over the prepared tables on ``conn``; raises ``duckdb.Error``
        if a statement fails (the caller then runs the rules one by one)."""
        if not self.rules:
            return Fired([], {})
        if self.shared is not None:
            conn.execute(self.shared[0], list(self.shared[1]))
        hits: list[tuple[int, pa.Array]] = []
        for scan in self.scans:
            res = conn.sql(scan.parsed, params=list(scan.params)).to_arrow_table()
            rows = res.column("_row").combine_chunks()
            for j, mask in enumerate(scan.masks):
                m = res.column(f"m{j}").combine_chunks()
                for b, c in enumerate(mask):
                    hit = rows.filter(pc.not_equal(pc.bit_wise_and(m, pa.scalar(1 << b, pa.int64())), 0))
                    if len(hit):
                        hits += [(r, hit) for r in self.conditions[c]]
        if not hits:
            return Fired([], {})
        fired = pa.Table.from_batches([
            pa.record_batch({"_row": hit, "__msg": pa.array([self.message_of[r]] * len(hit), pa.int32())})
            for r, hit in hits])
        conn.register(FIRED, fired)
        try:
            rendered = conn.execute(self.render, list(self.render_params)).fetchall()
        finally:
            conn.unregister(FIRED)
        return Fired(hits, {(msg, row): (bytes(t), bytes(s), int(d), text) for row, msg, t, s, d, text in rendered})
