"""Many rules of one variable as bit columns of a few scans of the batch.

A rule set's statements once cost a batch about what their rules cost alone:
each rule was its own pipeline over the whole prepared table, its
quantifiers decorrelated into joins of their own (2,000 rules: ~12 ms a rule
over 100,000 spans, ``tests/dsl/bench_rules.py``).  Most rules are *local*:
one variable, a condition on that span, quantifiers that only count or
aggregate related spans.  For those:

- every distinct *shareable* quantifier (``dsl.compiler.shareable``: no
  quantifier inside, no ``by``) is computed once per batch, by the scan
  whose conditions read it: grouped by the relation's key when its condition
  reads only its own variable (children by parent, ``span`` by trace,
  descendants and ancestors through the closure), else over the relation's
  join grouped by the quantifying span; the aggregates of one source share
  one grouped scan, side by side;
- every distinct condition becomes one bit of a BIGINT mask column; a scan
  computes up to ``MASKS_PER_SCAN`` masks and returns only the rows with a
  bit set;
- messages are rendered by one statement, once per distinct (message, span),
  only for the spans that fired (a quantifier in a message stays a subquery).

A rule with a quantifier that cannot be shared, with several variables or
with ``explains`` runs as before (``rest``): as its own statement.  The findings
are the same (``tests/dsl/test_columnar.py`` compares both ways).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dsl import ir
from dsl.compiler import (
    Aggregate,
    CompiledRule,
    Fragment,
    NotLocal,
    aggregate_column,
    compile_aggregate,
    compile_local,
    render_statement,
    renumber,
    scan_statement,
    shareable,
    with_nulls,
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
    sql: str
    parsed: duckdb.Statement


@dataclass(frozen=True, slots=True)
class Fired:
    """The rows one evaluation returns: per rule index, the ``_row`` of each span it fired on,
    and per (message index, row) the span's trace id, span id, depth and rendered message."""

    hits: list[tuple[int, pa.Array]]
    spans: dict[tuple[int, int], tuple[bytes, bytes, int, str]]  # key: (message index, row)


@dataclass(frozen=True)
class ColumnarPlan:
    """The local rules of a rule set as condition bits of a few scans, with the quantifiers
    they read, and their messages; ``rest`` the rules that run as their own statements."""

    rules: tuple[CompiledRule, ...]
    rest: tuple[CompiledRule, ...]
    conditions: tuple[tuple[int, ...], ...]  # per distinct condition, the indexes (in ``rules``) of its rules
    message_of: tuple[int, ...]  # per rule, the index of its distinct message
    scans: tuple[_Scan, ...]
    render: str  # render_statement over FIRED
    render_params: tuple[object, ...]
    shared_count: int = 0  # distinct quantifiers the scans compute

    @classmethod
    def of(cls, rules: Iterable[CompiledRule], checked: dict[str, ir.CheckedRule],
           masks_per_scan: int | None = None) -> ColumnarPlan:
        local: list[CompiledRule] = []
        rest: list[CompiledRule] = []
        aggregates: dict[object, int] = {}
        agg_list: list[Aggregate] = []
        sources: dict[tuple[str, str, str], int] = {}
        conds: dict[object, int] = {}
        cond_rules: list[list[int]] = []
        cond_frags: list[Fragment] = []
        cond_aggs: list[set[int]] = []  # per distinct condition, the aggregates it reads
        messages: dict[object, int] = {}
        msg_frags: list[Fragment] = []
        message_of: list[int] = []
        for rule in rules:
            source = checked.get(rule.id)
            if source is None or len(source.bindings) != 1 or source.explains:
                rest.append(rule)
                continue
            used: set[int] = set()

            def column(q: ir.Quant, outer: str = source.bindings[0].var, used: set[int] = used) -> str | None:
                if not shareable(q, outer):
                    return None
                agg = compile_aggregate(q)
                k = (agg.source, agg.empty, _key(agg.frag.sql, agg.frag.params))
                if k not in aggregates:
                    aggregates[k] = len(agg_list)
                    agg_list.append(agg)
                    sources.setdefault(agg.source, len(sources))
                used.add(aggregates[k])
                return aggregate_column(sources[agg.source], aggregates[k], agg.empty)

            try:
                cond, msg = compile_local(source, column)
            except NotLocal:
                rest.append(rule)
                continue
            i = len(local)
            local.append(rule)
            ck = _key(cond.sql, cond.params)
            if ck not in conds:
                conds[ck] = len(cond_frags)
                cond_frags.append(cond)
                cond_rules.append([])
                cond_aggs.append(set())
            cond_rules[conds[ck]].append(i)
            cond_aggs[conds[ck]] |= used
            mk = _key(msg.sql, msg.params)
            if mk not in messages:
                messages[mk] = len(msg_frags)
                msg_frags.append(msg)
            message_of.append(messages[mk])
        per_scan = MASK_BITS * (masks_per_scan or MASKS_PER_SCAN)
        scans = []
        for start in range(0, len(cond_frags), per_scan):
            chunk = list(range(start, min(start + per_scan, len(cond_frags))))
            needed = sorted(set().union(*(cond_aggs[c] for c in chunk)))
            # the aggregates' parameters first, then the conditions'
            texts, params = renumber([agg_list[a].frag for a in needed] + [cond_frags[c] for c in chunk])
            groups: dict[int, tuple[tuple[str, str, str], list[tuple[int, str]]]] = {}
            for a, text in zip(needed, texts):
                src = agg_list[a].source
                groups.setdefault(sources[src], (src, []))[1].append((a, text))
            cond_texts = texts[len(needed):]
            masks = [chunk[m:m + MASK_BITS] for m in range(0, len(chunk), MASK_BITS)]
            sql = scan_statement([[cond_texts[c - start] for c in mask] for mask in masks], groups)
            scans.append(_Scan(tuple(tuple(m) for m in masks), params, sql, duckdb.extract_statements(sql)[0]))
        texts, render_params = renumber(msg_frags)
        return cls(tuple(local), tuple(rest), tuple(tuple(v) for v in cond_rules), tuple(message_of), tuple(scans),
                   render_statement(FIRED, texts) if texts else "", render_params, len(agg_list))

    def with_nulls(self, absent: Mapping[str, str], rules: tuple[CompiledRule, ...],
                   rest: tuple[CompiledRule, ...]) -> ColumnarPlan:
        """The plan over prepared tables without the ``absent`` attribute columns (``compiler.with_nulls``):
        its statements read a typed NULL for each; ``rules`` and ``rest`` are its own, rewritten alike
        (the rules run one statement each if a scan fails)."""
        scans = []
        for scan in self.scans:
            sql = with_nulls(scan.sql, absent)
            scans.append(replace(scan, sql=sql, parsed=duckdb.extract_statements(sql)[0]))
        return replace(self, rules=rules, rest=rest, scans=tuple(scans), render=with_nulls(self.render, absent))

    def run(self, conn: duckdb.DuckDBPyConnection) -> Fired:
        """The rules' firings over the prepared tables on ``conn``; raises ``duckdb.Error``
        if a statement fails (the caller then runs the rules one by one)."""
        hits: list[tuple[int, pa.Array]] = []
        for scan in self.scans:
            # the rows where some condition holds (scan_statement), usually few: fetched as rows,
            # since a relation (conn.sql) binds the statement twice, and binding this one (its
            # hundreds of conditions, regular expressions compiled) costs more than running it
            found = conn.execute(scan.parsed, list(scan.params)).fetchall()
            if not found:
                continue
            columns = list(zip(*found))
            rows = pa.array(columns[0], pa.int64())
            for j, mask in enumerate(scan.masks):
                m = pa.array(columns[j + 1], pa.int64())
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

    def rejected(self, conn: duckdb.DuckDBPyConnection) -> tuple[set[int], duckdb.Error | None]:
        """Run the plan's statements once over the (empty) prepared tables on ``conn``, as
        ``load_rules`` validates a rule set: the indexes (in ``rules``) of the rules whose scan
        DuckDB rejected, and the error rendering the messages met, if any."""
        failed: set[int] = set()
        for scan in self.scans:
            try:
                conn.execute(scan.parsed, list(scan.params)).fetchall()
            except duckdb.Error:
                failed |= {r for mask in scan.masks for c in mask for r in self.conditions[c]}
        if not self.render:
            return failed, None
        conn.register(FIRED, pa.table({"_row": pa.array([], pa.int64()), "__msg": pa.array([], pa.int32())}))
        try:
            conn.execute(self.render, list(self.render_params)).fetchall()
        except duckdb.Error as err:
            return failed, err
        finally:
            conn.unregister(FIRED)
        return failed, None
