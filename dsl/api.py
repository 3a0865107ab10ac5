"""The public face of ``dsl``: load rule files into a ``RuleSet`` and run it.

``load_rules`` reads, parses, checks and compiles; ``RuleSet.evaluate`` runs
every rule over one batch of completed traces held in a DuckDB table (the
store's contract, ``dsl.projection``) and returns ``Finding`` values.
``check_paths``/``cli_check`` serve ``faulttrace check``.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import glob
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from itertools import compress, repeat
from operator import is_not
from pathlib import Path
from typing import TextIO, cast

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dsl import ast, ir
from dsl.absence import ERROR, Absent, can_fire
from dsl.checker import CheckResult, check
from dsl.columnar import ColumnarPlan
from dsl.compiler import (
    ANCESTORS,
    BASELINE_COLUMNS,
    BASELINE_TABLE,
    CompiledRule,
    EvidenceQuery,
    ancestors_statement,
    cleanup_statements,
    compile_evidence,
    compile_rule,
    foldable,
    prepare_statements,
    quote_ident,
    read_columns,
    with_nulls,
)
from dsl.diagnostics import Diagnostic, SourceSpan, did_you_mean, render_all, sort_key, to_json
from dsl.faulttree import TRUE, UNKNOWN, BatchEvidence, TreeOutcome, TreePlan, evaluate_trees, explain
from dsl.limits import MAX_FILE_BYTES
from dsl.parser import parse
from dsl.projection import EVENT_LIST, LINK_LIST, SPAN_COLUMNS, AttrRef, column_name, ref_sql_type

PathLike = str | Path
log = logging.getLogger(__name__)

# Rules per statement.  Every rule of a batch once ran in one UNION ALL
# statement; DuckDB's planning of such a statement grows faster than its
# size (500 rules: 22 s a batch of 100,000 spans, against 7.7 s one statement
# a rule), while a statement of a few rules costs about what its rules cost
# alone, less one round trip each (tests/dsl/bench_rules.py, docs/rules.md).
STATEMENT_RULES = 10


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule firing on one span of one trace."""

    trace_id: bytes
    span_id: bytes
    rule_id: str
    layer: str
    severity: str
    confidence: float
    message: str
    depth: int = 0  # of the blamed span; deeper spans rank first on ties
    title: str = ""
    explains: tuple[bytes, ...] = ()  # spans the finding explains (the rule's `explains`): symptoms of this one

    @property
    def score(self) -> float:
        """Ranking weight (``ir.score``)."""
        return ir.score(self.confidence, self.severity)


class RuleError(Exception):
    """Rule files with errors; carries every diagnostic and the sources."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str]) -> None:
        self.diagnostics = diagnostics
        self.sources = sources
        super().__init__(render_all(diagnostics, sources))


class RuleRuntimeError(Exception):
    """A compiled rule failed in DuckDB (a bug, or a table off the contract)."""

    def __init__(self, rule_id: str, cause: Exception) -> None:
        self.rule_id = rule_id
        super().__init__(f"rule {rule_id}: {cause}")


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What a rule set says about one batch: rule findings (ranked within
    each trace) and the verdicts of fault trees whose top event is not false."""

    findings: list[Finding]
    trees: list[TreeOutcome]


@dataclass(frozen=True)
class RuleSet:
    """Compiled rules and fault trees plus what the store must provide for them.

    ``conditions`` are the span conditions of house events and top events
    (run like rules; their findings are evidence, not reported);
    ``evidence`` finds, per trace, the tree-referenced rules that could not
    be evaluated and the span conditions that hold (those it cannot fold in
    run as their own statements)."""

    rules: tuple[CompiledRule, ...]
    warnings: tuple[Diagnostic, ...] = ()
    projection: frozenset[AttrRef] = frozenset()
    needs: frozenset[str] = frozenset()
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    trees: tuple[TreePlan, ...] = field(default=(), compare=False)
    conditions: tuple[CompiledRule, ...] = ()
    evidence: EvidenceQuery | None = None
    checked: dict[str, ir.CheckedRule] = field(default_factory=dict, compare=False)
    statement_rules: int = field(default=STATEMENT_RULES, compare=False)  # rules per statement (> 0)
    columnar: bool = field(default=True, compare=False)  # local rules as columns of a few scans (``dsl.columnar``)
    # the statements per set of absent columns (``_batch_plan``), in the order of use, the last used last
    _batch_plans: dict[Absent, _BatchPlan] = field(default_factory=dict, compare=False, repr=False, init=False)
    _batch_plans_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False, init=False)

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)

    def select(self, ids: Iterable[str]) -> RuleSet:
        """The rule set restricted to ``ids`` (fixture tests run a few rules)."""
        wanted = set(ids)
        rules = tuple(r for r in self.rules if r.id in wanted)
        return RuleSet(rules, self.warnings, self.projection, _needs(rules), self.sources, checked=self.checked,
                       statement_rules=self.statement_rules, columnar=self.columnar)

    @property
    def tree_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.trees)

    def tree(self, tree_id: str) -> TreePlan | None:
        return next((p for p in self.trees if p.id == tree_id), None)

    def select_trees(self, tree_ids: Iterable[str], rule_ids: Iterable[str] = ()) -> RuleSet:
        """The rule set restricted to the trees ``tree_ids``, the rules they
        reference and ``rule_ids`` (fixture tests of trees)."""
        wanted = set(tree_ids)
        plans = tuple(p for p in self.trees if p.id in wanted)
        keep = _tree_rules(plans) | set(rule_ids)
        rules = tuple(r for r in self.rules if r.id in keep)
        selected = _assemble(rules, self.checked, plans, self.conditions, self.warnings, self.projection, self.sources)
        return replace(selected, statement_rules=self.statement_rules, columnar=self.columnar)

    @cached_property
    def _columnar(self) -> ColumnarPlan:
        # without ``checked`` (or with ``columnar`` off) every rule is in the plan's ``rest``
        return ColumnarPlan.of(self.rules, self.checked if self.columnar else {})

    @cached_property
    def _rule_statements(self) -> tuple[_Statement, ...]:
        """The statements of the rules the columnar plan leaves to run on their own."""
        return statements(self._columnar.rest, self.statement_rules)

    @cached_property
    def _scores(self) -> dict[str, float]:
        return {r.id: ir.score(r.meta.confidence, r.meta.severity) for r in self.rules}

    @cached_property
    def _condition_groups(self) -> _ConditionGroups:
        folded = set(self.evidence.condition_ids) if self.evidence else set()
        return _ConditionGroups.of([c for c in self.conditions if c.id not in folded], self.statement_rules)

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """The store columns the rules read: intrinsics, then the projection (named once: each
        attribute's column name is a hash, ~4 ms for the library's, which every batch asked for)."""
        return tuple(n for n, _ in SPAN_COLUMNS) + tuple(column_name(r) for r in sorted(self.projection))

    @cached_property
    def _attribute_types(self) -> dict[str, str]:
        """The projected attribute columns the rules read, in ``columns``' order, with their DuckDB types."""
        return {column_name(r): ref_sql_type(r) for r in sorted(self.projection)}

    def _batch_plan(self, absent: Absent) -> _BatchPlan:
        """The statements for a batch without what ``absent`` says, built once per such
        value (5-20 ms for the library, 0.15 s for 2,000 rules): a stream's batches mostly
        lack the same attributes.  The ``_BATCH_PLANS`` used last are kept."""
        plans = self._batch_plans
        with self._batch_plans_lock:  # batches may be evaluated concurrently (on cursors of their own)
            plan = plans.pop(absent, None)
            if plan is None:
                plan = _BatchPlan.of(self, absent)
                while len(plans) >= _BATCH_PLANS:
                    del plans[next(iter(plans))]  # the least recently used
            plans[absent] = plan
        return plan

    def _absent(self, conn: duckdb.DuckDBPyConnection, table: str, known: KnownBatch | None) -> Absent:
        """What no span of ``table`` has: a value in an attribute column the rules read, an
        error status.  In a batch of a few services most attribute columns are empty (the rule
        library reads dozens of attributes that each concern a kind of span), and a column of
        NULLs costs about as much to copy into the prepared table as one of values; the
        statements read a NULL constant instead.  Healthy traffic has batches without errors,
        where most rules cannot fire (``dsl.absence``).  From what the caller ``known``s of an
        Arrow batch (its null counts, ``KnownBatch``), else counted (a scan of every column the
        rules read: ~0.3 µs a span for the library's)."""
        cols = list(self._attribute_types)
        if known is not None:
            return Absent(frozenset(c for c in cols if c in known.empty), errors=known.errors)
        counts = conn.execute(parsed(f"SELECT count(*) FILTER (WHERE status_code = {ERROR})"
                                     f"{''.join(f', count({c})' for c in cols)} FROM {quote_ident(table)}")).fetchall()[0]
        return Absent(frozenset(c for c, n in zip(cols, counts[1:]) if n == 0), errors=counts[0] > 0)

    def _prepare(self, conn: duckdb.DuckDBPyConnection, table: str) -> tuple[list[str], _BatchPlan]:
        known = known_of(table)
        plan = self._batch_plan(self._absent(conn, table, known))
        baseline = "baseline" in self.needs and _has_baseline(conn)
        needs = self.needs if plan.ancestors else self.needs - {"ancestors"}
        stmts = prepare_statements(table, needs, self.columns, _row_key(conn, table), baseline, plan.nulls,
                                   plan.reads)
        return stmts, plan

    def prepare_statements(self, conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
        """The statements ``evaluate`` runs first (exposed for benchmarks)."""
        return self._prepare(conn, table)[0]

    def evaluate(
        self, conn: duckdb.DuckDBPyConnection, table: str, on_error: Callable[[RuleRuntimeError], None] | None = None,
    ) -> list[Finding]:
        """All findings for the traces in ``table``, ranked within each trace
        (score descending, deeper spans first, then rule id).

        Builds the per-batch temp tables on ``conn`` (temp tables are per
        connection: evaluate batches concurrently on separate cursors), runs
        each rule's statement over the whole batch, and drops the temp tables.
        A rule that fails in DuckDB does not cost the others their findings:
        the error goes to ``on_error`` (default: logged) and evaluation goes on."""
        return self.evaluate_all(conn, table, on_error).findings

    def evaluate_all(
        self, conn: duckdb.DuckDBPyConnection, table: str, on_error: Callable[[RuleRuntimeError], None] | None = None,
    ) -> Evaluation:
        """``evaluate``, plus the fault trees: per trace, each tree's top
        event in three-valued logic from the rule findings, and its
        confidence (see ``dsl.faulttree``).  A rule that fails in DuckDB is
        unknown evidence for every trace of the batch."""
        if not self.rules and not self.conditions:
            return Evaluation([], [])
        failed: set[str] = set()

        def report(err: RuleRuntimeError) -> None:
            failed.add(err.rule_id)
            (on_error or _log_rule_error)(err)

        stmts, plan = self._prepare(conn, table)
        for stmt in stmts:
            conn.execute(parsed(stmt))
        try:
            findings = self._columnar_findings(conn, plan, report)
            findings += [f for _, f in _run_statements(conn, plan.rule_statements, report)]
            conditions: list[Finding] = []
            per_trace: list[tuple[object, ...]] | None = None
            if self.trees:
                conditions = plan.condition_groups.run(conn, report)
                if self.evidence is not None and plan.evidence is not None:
                    # rows, not Arrow: a relation (conn.sql) binds the statement twice (~8 ms of a
                    # 2,000-span bench batch), and Arrow from execute copies (DuckDB warns); its
                    # columns become a trace id list and a byte per trace and rule (``_trees``)
                    per_trace = conn.execute(plan.evidence, list(self.evidence.params)).fetchall()
        finally:
            for stmt in cleanup_statements():
                conn.execute(parsed(stmt))
        findings = _ranked(findings, self._scores)
        trees = self._trees(findings, conditions, per_trace, failed) if self.trees else []
        return Evaluation(findings, trees)

    def _columnar_findings(self, conn: duckdb.DuckDBPyConnection, batch: _BatchPlan,
                           report: Callable[[RuleRuntimeError], None]) -> list[Finding]:
        """The findings of the columnar plan's rules.  If one of its statements fails, its
        rules run as statements instead, so that only the failing rule loses its findings."""
        plan = batch.columnar
        try:
            fired = plan.run(conn)
        except duckdb.Error:
            log.debug("columnar evaluation failed; running its rules one statement each", exc_info=True)
            if not batch.ancestors and any("ancestors" in r.needs for r in plan.rules):
                conn.execute(parsed(ancestors_statement()))  # their own statements read it
            return [f for _, f in _run_statements(conn, statements(plan.rules, self.statement_rules), report)]
        out: list[Finding] = []
        for r, rows in fired.hits:
            m = plan.rules[r].meta
            msg = plan.message_of[r]
            for row in rows.to_pylist():
                trace_id, span_id, depth, message = fired.spans[msg, row]
                out.append(Finding(trace_id, span_id, m.id, m.layer, m.severity, m.confidence, message, depth, m.title))
        return out

    def _trees(self, findings: list[Finding], conditions: list[Finding], per_trace: list[tuple[object, ...]] | None,
               failed: set[str]) -> list[TreeOutcome]:
        """Assemble the batch's evidence (``dsl.faulttree.BatchEvidence``) and evaluate the trees."""
        ev = self.evidence
        if per_trace is None or ev is None:
            return []
        n = len(per_trace)
        width = 2 + len(ev.rule_ids) + len(set(ev.condition_columns))
        columns: list[tuple[object, ...]] = list(zip(*per_trace)) if n else [()] * width
        trace_ids = cast(list[bytes], list(columns[0]))
        index = dict(zip(trace_ids, range(n)))
        broken = bytearray(cast(tuple[int, ...], columns[1]))
        unknown_cols = {rid: k + 2 for k, rid in enumerate(ev.rule_ids)}
        ids = set(self.ids)
        states: dict[str, bytearray] = {}
        for rid in _tree_rules(self.trees):
            if rid in failed or rid not in ids:
                states[rid] = bytearray([UNKNOWN]) * n
            elif rid in unknown_cols:
                states[rid] = bytearray(cast(tuple[int, ...], columns[unknown_cols[rid]]))
            else:
                states[rid] = bytearray(broken)
        blamed: dict[tuple[int, str], list[bytes]] = {}
        for f in findings:
            i = index.get(f.trace_id)
            if i is None or f.rule_id not in states:
                continue
            states[f.rule_id][i] = TRUE
            blamed.setdefault((i, f.rule_id), []).append(f.span_id)
        holds: dict[str, set[int]] = {}
        first = 2 + len(ev.rule_ids)
        top_spans: dict[str, list[bytes | None]] = {}
        held: dict[int, tuple[set[int], list[bytes | None]]] = {}  # conditions written alike share a column
        for cid, k in zip(ev.condition_ids, ev.condition_columns):
            if k not in held:
                spans = cast(list[bytes | None], list(columns[first + k]))
                # the traces where it holds, picked out in C (a loop in Python was ~0.5 ms a condition
                # over 10,000 traces, for the library's 12 conditions every batch)
                held[k] = set(compress(range(n), map(is_not, spans, repeat(None)))), spans
            holds[cid] = set(held[k][0])  # the conditions' findings add to each set on its own
            top_spans[cid] = held[k][1]
        for f in conditions:
            i = index.get(f.trace_id)
            if i is not None:
                holds.setdefault(f.rule_id, set()).add(i)
                blamed.setdefault((i, f.rule_id), []).append(f.span_id)
        return evaluate_trees(self.trees, BatchEvidence(trace_ids, states, holds, blamed, top_spans))


@lru_cache(maxsize=256)
def parsed(sql: str) -> duckdb.Statement:
    """``sql`` (one statement) parsed once.  A rule set runs the same
    statements on every batch, and parsing is a fixed cost per batch that
    matters: ~40 ms for the union of seventy rules, a third of its run over
    an empty batch.  A parsed statement runs on any connection.  The
    localizer's and its history's per-batch statements are parsed here too
    (~14 ms of text parsing a batch at HEAD d925675, besides the rules')."""
    return duckdb.extract_statements(sql)[0]


_PARAM = re.compile(r"\$(\d+)")


@dataclass(frozen=True, slots=True)
class _Statement:
    """Rules that run together: one UNION ALL of their statements, parsed once
    (parameters renumbered, each row tagged with its rule's index here)."""

    rules: tuple[CompiledRule, ...]
    sql: str
    params: tuple[object, ...]
    parsed: duckdb.Statement

    @classmethod
    def of(cls, rules: tuple[CompiledRule, ...]) -> _Statement:
        """The compiler binds every literal as a ``$n`` parameter and writes only
        ``[a-z0-9_]`` identifiers, so ``$n`` occurs in a statement only as a parameter."""
        parts: list[str] = []
        params: list[object] = []
        for i, rule in enumerate(rules):
            offset = len(params)
            sql = _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", rule.sql)
            parts.append(f"SELECT {i} AS __rule, * FROM ({sql})")
            params += list(rule.params)
        sql = " UNION ALL ".join(parts)
        return cls(rules, sql, tuple(params), duckdb.extract_statements(sql)[0])


_BATCH_PLANS = 16  # batch plans a rule set keeps (the least recently used goes)


@dataclass(frozen=True, slots=True)
class _BatchPlan:
    """A rule set's statements for batches without what an ``Absent`` says (``dsl.absence``):
    they read a typed NULL for each attribute column no span has a value in (``nulls``, name ->
    DuckDB type; ``compiler.with_nulls``), so that the prepare step leaves those columns out of
    its copies, and the rules and span conditions that cannot fire in such a batch are left out.
    Findings are those of the rule set's own statements over a copy with the columns.
    ``reads``: the columns of the prepared span table the statements read (the only ones the
    prepare step copies into it), the ids of a span always."""

    nulls: dict[str, str]  # the absent columns, with their types
    columnar: ColumnarPlan
    rule_statements: tuple[_Statement, ...]
    condition_groups: _ConditionGroups
    evidence: duckdb.Statement | None
    reads: frozenset[str]
    # whether the statements read ``ANCESTORS``: a columnar scan walks the closure from the spans its
    # quantifiers count instead (``compiler.scan_statement``), and the table is built only for a
    # statement that reads it, or for the rules of a failed scan (``RuleSet._columnar_findings``)
    ancestors: bool = True

    @classmethod
    def of(cls, ruleset: RuleSet, absent: Absent) -> _BatchPlan:
        types = {c: t for c, t in ruleset._attribute_types.items() if c in absent.columns}

        def nulled(rules: Iterable[CompiledRule]) -> tuple[CompiledRule, ...]:
            return tuple(replace(r, sql=with_nulls(r.sql, types)) for r in rules)

        def live(rules: Iterable[CompiledRule]) -> list[CompiledRule]:
            return [r for r in rules if r.id not in ruleset.checked or can_fire(ruleset.checked[r.id], absent)]

        ev = ruleset.evidence
        evidence_sql = with_nulls(ev.sql, types) if ev is not None else ""
        evidence = duckdb.extract_statements(evidence_sql)[0] if ev is not None else None
        if absent == Absent():
            columnar, rule_statements, conditions = ruleset._columnar, ruleset._rule_statements, ruleset._condition_groups
        else:
            plan = ColumnarPlan.of(live(ruleset.rules), ruleset.checked if ruleset.columnar else {})
            columnar = plan.with_nulls(types, nulled(plan.rules), nulled(plan.rest))
            rule_statements = statements(columnar.rest, ruleset.statement_rules)
            folded = set(ev.condition_ids) if ev else set()
            conditions = _ConditionGroups.of(nulled(live(c for c in ruleset.conditions if c.id not in folded)),
                                             ruleset.statement_rules)
        # what the columnar plan's rules read as statements (if a scan fails) counts too
        texts = [evidence_sql, columnar.render, *(s.sql for s in columnar.scans), *(r.sql for r in columnar.rules),
                 *(s.sql for s in (*rule_statements, *conditions.stmts))]
        reads = read_columns(texts) | {"trace_id", "span_id"}
        run = [evidence_sql, columnar.render, *(s.sql for s in (*columnar.scans, *rule_statements, *conditions.stmts))]
        ancestors = any(ANCESTORS in text for text in run)
        return cls(types, columnar, rule_statements, conditions, evidence, reads, ancestors)


def statements(rules: Iterable[CompiledRule], size: int = STATEMENT_RULES) -> tuple[_Statement, ...]:
    """``rules`` in statements of at most ``size`` rules, in order."""
    if size < 1:
        raise ValueError(f"rules per statement must be positive, not {size}")
    rules = tuple(rules)
    return tuple(_Statement.of(rules[i:i + size]) for i in range(0, len(rules), size))


def _run_statements(conn: duckdb.DuckDBPyConnection, stmts: Iterable[_Statement],
                    report: Callable[[RuleRuntimeError], None]) -> list[tuple[CompiledRule, Finding]]:
    """The findings of the rules of ``stmts``, each with its rule.

    A statement runs its rules in one round trip (in a busy process each
    return from DuckDB waits for the interpreter lock); rule by rule only if
    it fails, so one broken rule does not cost the others their findings
    (its error goes to ``report``)."""
    out: list[tuple[CompiledRule, Finding]] = []
    for stmt in stmts:
        try:
            rows = conn.execute(stmt.parsed, list(stmt.params)).fetchall()
        except duckdb.Error:
            for rule in stmt.rules:
                try:
                    out += [(rule, f) for f in _run(conn, rule)]
                except RuleRuntimeError as err:
                    report(err)
            continue
        out += [(stmt.rules[i], _finding(stmt.rules[i], t, sp, d, msg, ex)) for i, t, sp, d, msg, ex in rows]
    return out


@dataclass(frozen=True, slots=True)
class _ConditionGroups:
    """The trees' span conditions to run: conditions written alike by several
    trees (the same top event) run once, as the first of their group."""

    groups: tuple[tuple[CompiledRule, ...], ...]
    stmts: tuple[_Statement, ...]

    @classmethod
    def of(cls, conditions: Iterable[CompiledRule], size: int) -> _ConditionGroups:
        groups: dict[tuple[str, tuple[object, ...]], list[CompiledRule]] = {}
        for cond in conditions:
            groups.setdefault((cond.sql, cond.params), []).append(cond)
        alike = tuple(tuple(same) for same in groups.values())
        return cls(alike, statements((same[0] for same in alike), size))

    def run(self, conn: duckdb.DuckDBPyConnection, report: Callable[[RuleRuntimeError], None]) -> list[Finding]:
        """The conditions' findings, each under the id of every condition of its group."""
        alike = {same[0].id: same[1:] for same in self.groups}  # condition ids are unique (checker)

        def report_alike(err: RuleRuntimeError) -> None:
            # the conditions written alike were not run on their own: they fail with it
            report(err)
            for c in alike[err.rule_id]:
                report(RuleRuntimeError(c.id, err))

        out: list[Finding] = []
        for first, f in _run_statements(conn, self.stmts, report_alike):
            out += [f] + [replace(f, rule_id=c.id) for c in alike[first.id]]
        return out


def _tree_rules(plans: Iterable[TreePlan]) -> set[str]:
    """Rules the trees read: their basic events and rule top events."""
    out: set[str] = set()
    for p in plans:
        out |= {b.rule for b in p.tree.basics}
        if p.tree.top_rule:
            out.add(p.tree.top_rule)
    return out


def _tree_conditions(plans: Iterable[TreePlan]) -> set[str]:
    out: set[str] = set()
    for p in plans:
        if p.tree.top_condition is not None:
            out.add(p.tree.top_condition.meta.id)
        out |= {h.condition.meta.id for h in p.tree.houses if h.condition is not None}
    return out


def _assemble(rules: tuple[CompiledRule, ...], checked: dict[str, ir.CheckedRule], plans: tuple[TreePlan, ...],
              conditions: Iterable[CompiledRule], warnings: tuple[Diagnostic, ...], projection: frozenset[AttrRef],
              sources: dict[str, str]) -> RuleSet:
    """A RuleSet of ``rules`` and the trees ``plans`` (with their conditions
    and evidence query); ``projection`` stays as loaded so a selection reads
    the same store columns."""
    wanted = _tree_conditions(plans)
    conds = tuple(c for c in conditions if c.id in wanted)
    basic_rules = {b.rule for p in plans for b in p.tree.basics}
    evidence = None
    if plans:
        three = [checked[r.id] for r in rules if r.id in basic_rules and r.id in checked]
        evidence = compile_evidence(three, [checked[c.id] for c in conds if foldable(checked[c.id])])
    needs = _needs(rules) | _needs(conds) | (evidence.needs if evidence else frozenset())
    return RuleSet(rules, warnings, projection, needs, sources, plans, conds, evidence, checked)


def _log_rule_error(err: RuleRuntimeError) -> None:
    log.warning("rule %s failed and was skipped for this batch: %s", err.rule_id, err)


ROW_KEY = "_row"  # a dense row number a caller may add to the batch table (saves a copy)


def columns_of(conn: duckdb.DuckDBPyConnection, table: str) -> frozenset[str]:
    """The columns of ``table``: as the caller's ``known_batch`` knows them (no statement), else as
    DuckDB binds them (a statement over the table: ~1-2 ms for the worker's 70-odd columns)."""
    known = known_of(table)
    if known is not None:
        return known.columns
    return frozenset(d[0] for d in conn.execute(f"SELECT * FROM {quote_ident(table)} LIMIT 0").description)


def _row_key(conn: duckdb.DuckDBPyConnection, table: str) -> str | None:
    """How rows of ``table`` are numbered: its ``_row`` column, its rowid, or neither (a view, or
    an Arrow table: without its ``_row`` the prepare step copies it first)."""
    if ROW_KEY in columns_of(conn, table):
        return ROW_KEY
    if known_of(table) is not None:
        return None  # registered from Arrow: no rowid
    try:
        conn.execute(f"SELECT rowid FROM {quote_ident(table)} LIMIT 0").fetchall()
    except duckdb.Error:
        return None
    return "rowid"


@dataclass(frozen=True, slots=True)
class KnownBatch:
    """What the caller knows of a batch table it registered from Arrow (``known_batch``), so that
    evaluation need not ask DuckDB: each question costs a statement over the registered table,
    whose binding alone reads the Arrow schema (~1 ms for the worker's 70-odd columns).
    ``columns`` the table's, ``empty`` those in which no row has a value, ``errors`` whether a
    span has an error status."""

    table: str
    columns: frozenset[str]
    empty: frozenset[str]
    errors: bool

    @classmethod
    def of(cls, table: str, arrow: pa.Table) -> KnownBatch:
        """From Arrow's null counts and a test of the status column: no scan in DuckDB."""
        names = arrow.column_names
        empty = frozenset(n for n, c in zip(names, arrow.columns) if c.null_count == arrow.num_rows)
        errors = "status_code" in names and bool(pc.any(pc.equal(arrow.column("status_code"), ERROR)).as_py())
        return cls(table, frozenset(names), empty, errors)


_KNOWN: contextvars.ContextVar[KnownBatch | None] = contextvars.ContextVar("faulttrace_known_batch", default=None)


def known_of(table: str) -> KnownBatch | None:
    """What the caller's ``known_batch`` says of ``table``, if it is in one for that table."""
    known = _KNOWN.get()
    return known if known is not None and known.table == table else None


@contextlib.contextmanager
def known_batch(table: str, arrow: pa.Table) -> Iterator[KnownBatch]:
    """While in the block, evaluations of ``table`` (registered from ``arrow`` on the
    connection they run on) take ``KnownBatch.of(table, arrow)`` instead of asking DuckDB."""
    known = KnownBatch.of(table, arrow)
    token = _KNOWN.set(known)
    try:
        yield known
    finally:
        _KNOWN.reset(token)


def _has_baseline(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``BASELINE_TABLE`` (with its columns) is on the connection: the baseline intrinsics read it."""
    try:
        conn.execute(f"SELECT {', '.join(BASELINE_COLUMNS)} FROM {BASELINE_TABLE} LIMIT 0").fetchall()
    except duckdb.Error:
        return False
    return True


def _run(conn: duckdb.DuckDBPyConnection, rule: CompiledRule) -> list[Finding]:
    try:
        rows = conn.execute(rule.sql, list(rule.params)).fetchall()
    except duckdb.Error as err:
        raise RuleRuntimeError(rule.id, err) from err
    return [_finding(rule, t, s, d, msg, ex) for t, s, d, msg, ex in rows]


def _finding(rule: CompiledRule, trace_id: bytes, span_id: bytes, depth: int, message: str,
             explains: list[bytes] | None = None) -> Finding:
    m = rule.meta
    span = bytes(span_id)
    # the blamed span never explains itself (`s before s` holds for a span of no duration)
    explained = tuple(dict.fromkeys(e for e in map(bytes, explains) if e != span)) if explains else ()
    return Finding(bytes(trace_id), span, m.id, m.layer, m.severity, m.confidence, message, int(depth),
                   m.title, explained)


_RANK_KEYS = [("trace", "ascending"), ("score", "descending"), ("depth", "descending"), ("rule", "ascending"),
              ("span", "ascending")]


def _ranked(findings: list[Finding], scores: dict[str, float]) -> list[Finding]:
    """``findings`` ranked within each trace: score descending (``scores``: each rule's
    ``Finding.score``), deeper spans first, then rule id and span id.  Sorted by Arrow (a
    stable sort, as Python's; bytes and UTF-8 compare alike in both): a Python key tuple
    per finding cost a second for 170,000 findings."""
    if len(findings) < 1000:
        return sorted(findings, key=lambda f: (f.trace_id, -scores[f.rule_id], -f.depth, f.rule_id, f.span_id))
    table = pa.table({
        "trace": pa.array([f.trace_id for f in findings], pa.binary()),
        "score": pa.array([scores[f.rule_id] for f in findings], pa.float64()),
        "depth": pa.array([f.depth for f in findings], pa.int64()),
        "rule": pa.array([f.rule_id for f in findings], pa.string()),
        "span": pa.array([f.span_id for f in findings], pa.binary()),
    })
    order = pc.sort_indices(table, sort_keys=_RANK_KEYS)
    return [findings[i] for i in order.to_pylist()]


def _needs(rules: Iterable[CompiledRule]) -> frozenset[str]:
    return frozenset().union(*(r.needs for r in rules))


def _projection(rules: Iterable[ir.CheckedRule]) -> frozenset[AttrRef]:
    refs: set[AttrRef] = set()
    lists = {"event": EVENT_LIST, "link": LINK_LIST}  # a relation over a span's events or links reads its list
    for rule in rules:
        refs.update(lists[r.relation] for r in rule.bindings if r.relation in lists)
        roots = [n for n in (rule.where, *rule.message) if n is not None and not isinstance(n, str)]
        for root in roots:
            for node in ir.walk(root):  # type: ignore[arg-type]
                if isinstance(node, ir.AttrValue):
                    refs.update(node.refs)
                elif isinstance(node, ir.Quant) and node.rel.relation in lists:
                    refs.add(lists[node.rel.relation])
    return frozenset(refs)


# ---- files ------------------------------------------------------------------------


def expand_paths(paths: Iterable[PathLike]) -> tuple[list[Path], list[Diagnostic]]:
    """Files named by ``paths``: files, directories (``*.rules`` below them)
    and globs; a path that matches nothing is an E040 diagnostic."""
    found: list[Path] = []
    diags: list[Diagnostic] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found += sorted(p.rglob("*.rules"))
        elif p.is_file():
            found.append(p)
        elif any(ch in str(raw) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True))
            found += [m for m in matches if m.is_file()]
            if not matches:
                diags.append(Diagnostic("E040", f"no rule files match `{raw}`", SourceSpan(str(raw), 0, 0, 0, 0)))
        else:
            diags.append(Diagnostic("E040", f"cannot read `{raw}`: no such file or directory", SourceSpan(str(raw), 0, 0, 0, 0)))
    unique = list(dict.fromkeys(found))
    return unique, diags


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Parsing and checking allocate millions of objects (tokens, Lark's
    trees and positions, AST and IR nodes) that form no reference cycles:
    reference counting frees them, and the cycle collector would only walk
    the growing trees again and again (half the time of checking a 1 MB
    file).  It is paused meanwhile: process-wide, as the collector is, and
    turned back on only if this turned it off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _read(path: Path) -> str | Diagnostic:
    """The text of a rule file (newlines as in text mode), or why not: E040,
    or E041 past ``MAX_FILE_BYTES`` (read no further than that)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            return Diagnostic("E041", f"rule file too large: more than {MAX_FILE_BYTES:,} bytes", SourceSpan(str(path), 1, 1, 1, 1),
                              ("split it into several files (definitions are shared by every file of a rule set)",))
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return _not_text(path, f"byte 0x{data[err.start]:02x} at offset {err.start} is not UTF-8")
    except OSError as err:
        return Diagnostic("E040", f"cannot read `{path}`: {err}", SourceSpan(str(path), 0, 0, 0, 0))
    if "\x00" in text:
        return _not_text(path, f"a NUL byte at offset {data.index(0)}")
    # a byte order mark (editors on Windows write one) is no part of the text
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _not_text(path: Path, why: str) -> Diagnostic:
    """E042: the file is not text (binary data, another encoding), reported at 1:1."""
    return Diagnostic("E042", f"`{path}` is not a UTF-8 text file: {why}", SourceSpan(str(path), 1, 1, 1, 1),
                      ("rule files are UTF-8 text; re-save it as UTF-8, or leave it out of the paths",))


def _empty(tree: ast.File) -> Diagnostic:
    """W008: a rule file that defines nothing (empty, or only comments)."""
    return Diagnostic("W008", "the rule file is empty: it defines no rule, macro or fault tree",
                      SourceSpan(tree.path, 1, 1, 1, 1), ("a path given by mistake? an empty file can be deleted",))


def _analyse(paths: Iterable[PathLike], sources: dict[str, str]) -> tuple[CheckResult, list[Diagnostic]]:
    """Parse and check the rule files under ``paths``; ``sources`` receives each file's text as it is read."""
    files, diags = expand_paths(paths)
    trees = []
    with _no_cycle_collection():
        for path in files:
            text = _read(path)
            if isinstance(text, Diagnostic):
                diags.append(text)
                continue
            sources[str(path)] = text
            tree, syntax = parse(text, str(path))
            trees.append(tree)
            diags += syntax
            if not tree.items and not syntax:
                diags.append(_empty(tree))
        conn = duckdb.connect()  # private, in memory: RE2 judges the patterns it will run
        try:
            result = check(trees, lambda pattern: _re2_problem(conn, pattern))
        finally:
            conn.close()
    trees = [replace(t, top_text=_top_text(t, sources)) for t in result.trees]
    return replace(result, trees=trees), diags + result.diagnostics


def _top_text(tree: ir.CheckedTree, sources: dict[str, str]) -> str:
    if tree.top_condition is None:
        return f"rule {tree.top_rule}"
    span = tree.top_condition.span
    text = sources.get(span.path, "")[span.start:span.end]
    return " ".join(text.split()).removeprefix("top ")


def _re2_problem(conn: duckdb.DuckDBPyConnection, pattern: str) -> str:
    try:
        conn.execute("SELECT regexp_matches('', $1)", [pattern]).fetchall()
    except duckdb.Error as err:
        return str(err).removeprefix("Invalid Input Error: ")
    return ""


def _diagnose(paths: Iterable[PathLike], validate: bool = True,
              ) -> tuple[CheckResult, list[Diagnostic], dict[str, str], RuleSet | None]:
    """Everything ``faulttrace check`` reports: parse and check problems, and,
    when there is no error, (with ``validate``) DuckDB's verdict on each
    compiled statement; with the rule set (None after an error before
    compiling), its warnings kept on it.

    The boundary of the rule compiler: an exception in any of it is a bug,
    and becomes one E000 diagnostic instead of a traceback."""
    paths = list(paths)
    sources: dict[str, str] = {}
    try:
        result, diags = _analyse(paths, sources)
        if any(d.is_error for d in diags):
            return result, sorted(diags, key=sort_key), sources, None
        ruleset = _build(result, tuple(sorted(diags, key=sort_key)), sources)
        if validate:
            diags += _validate(ruleset)
    except Exception as err:  # the component's boundary
        log.debug("internal error checking %s", [str(p) for p in paths], exc_info=True)
        return CheckResult([], []), [_internal_error(err, paths, sources)], sources, None
    return result, sorted(diags, key=sort_key), sources, ruleset


def _internal_error(err: Exception, paths: list[PathLike], sources: dict[str, str]) -> Diagnostic:
    """E000 for an unexpected exception, where the compiler was if its traceback shows it."""
    first = next(iter(sources), str(paths[0]) if paths else "<rules>")
    span = _traceback_span(err) or SourceSpan(first, 0, 0, 0, 0)
    what = str(err)
    what = what if len(what) <= 200 else what[:200] + "..."
    return Diagnostic("E000", f"internal error: {type(err).__name__}: {what}", span,
                      ("this is a bug in faulttrace, not in the rules: please report it with the rule files",))


def _traceback_span(err: BaseException) -> SourceSpan | None:
    """The span of the syntax-tree node (or checked rule) the innermost frame
    of ``err``'s traceback that holds one was working on: the position of the
    bug's trigger, without every step of the compiler tracking it."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if type(value).__module__ in (ast.__name__, ir.__name__):
                span = getattr(value, "span", None)
                if isinstance(span, SourceSpan) and span.line > 0:
                    return span
    return None


def _build(result: CheckResult, warnings: tuple[Diagnostic, ...], sources: dict[str, str]) -> RuleSet:
    """Compile a checked rule set: rules, fault trees and their conditions."""
    compiled = tuple(compile_rule(r) for r in result.rules)
    plans = tuple(TreePlan.of(t) for t in result.trees)
    cond_rules = [t.top_condition for t in result.trees if t.top_condition is not None]
    cond_rules += [h.condition for h in result.houses if h.condition is not None]
    conditions = tuple(compile_rule(c) for c in cond_rules)
    checked = {r.meta.id: r for r in [*result.rules, *cond_rules]}
    projection = _projection([*result.rules, *cond_rules])
    return _assemble(compiled, checked, plans, conditions, warnings, projection, sources)


def check_paths(paths: Iterable[PathLike]) -> list[Diagnostic]:
    """Every diagnostic of the rule files under ``paths``, sorted by position."""
    return _diagnose(paths)[1]


def load_rules(paths: Iterable[PathLike], *, validate: bool = True) -> RuleSet:
    """Parse, check and compile the rule files under ``paths``.

    Raises ``RuleError`` (carrying every diagnostic) if there is any error;
    warnings are kept on the returned ``RuleSet``.  With ``validate`` each
    compiled statement is run once over an empty table so that DuckDB itself
    confirms it (e.g. RE2 accepts every pattern) before any batch arrives."""
    _, diags, sources, ruleset = _diagnose(paths, validate)
    if ruleset is None or any(d.is_error for d in diags):
        raise RuleError(diags, sources)
    return ruleset


def _validate(ruleset: RuleSet) -> list[Diagnostic]:
    """Run every statement over an empty contract table (in a private
    in-memory database); a failure is a compiler bug or a bad regex.

    The columnar plan's scans stand for their rules (a few statements for
    thousands of rules: one each took 5,000 rules minutes); a rule's own
    statement runs if it is not in the plan or its scan was rejected, to
    say which rule is at fault."""
    if not ruleset.rules and not ruleset.conditions:
        return []
    conn = duckdb.connect()
    try:
        create_span_table(conn, "spans", ruleset.projection)
        for stmt in prepare_statements("spans", ruleset.needs, ruleset.columns):
            conn.execute(stmt)
        diags = []
        plan = ruleset._columnar
        failed, render_error = plan.rejected(conn)
        alone = [*plan.rest, *(plan.rules[i] for i in sorted(failed))]
        if render_error is not None:
            alone = list(ruleset.rules)
        for rule in (*alone, *ruleset.conditions):
            try:
                conn.execute(rule.sql, list(rule.params)).fetchall()
            except duckdb.Error as err:
                diags.append(_rejected(ruleset, rule.id, err))
        if (failed or render_error is not None) and not diags:
            # the plan failed where every rule's own statement passed: the plan's SQL is at fault
            rid = plan.rules[min(failed)].id if failed else plan.rules[0].id
            diags.append(_rejected(ruleset, rid, render_error or RuntimeError("its columnar scan failed")))
        if ruleset.evidence is not None:
            try:
                conn.execute(ruleset.evidence.sql, list(ruleset.evidence.params)).fetchall()
            except duckdb.Error as err:
                where = ruleset.trees[0].tree.span
                diags.append(Diagnostic("E050", f"the fault-tree evidence query was rejected by DuckDB: {err}", where,
                                        ("this is a bug in faulttrace's compiler",)))
        return diags
    finally:
        conn.close()


def _rejected(ruleset: RuleSet, rule_id: str, err: Exception) -> Diagnostic:
    return Diagnostic("E050", f"rule `{rule_id}` was rejected by DuckDB: {err}", ruleset.checked[rule_id].span,
                      ("this is a bug in faulttrace's compiler unless a regex is at fault",))


def create_span_table(conn: duckdb.DuckDBPyConnection, table: str, projection: Iterable[AttrRef]) -> None:
    """Create an empty span table per the store contract (intrinsic columns
    plus one typed column per projected attribute)."""
    cols = [f"{name} {typ}" for name, typ in SPAN_COLUMNS]
    cols += [f"{column_name(ref)} {ref_sql_type(ref)}" for ref in sorted(projection)]
    conn.execute(f"CREATE OR REPLACE TABLE {quote_ident(table)} ({', '.join(cols)})")


# ---- `faulttrace check` -----------------------------------------------------------


def cli_check(paths: Iterable[PathLike], fmt: str = "text", out: TextIO | None = None) -> int:
    """Print the diagnostics of the rule files under ``paths`` (``fmt`` is
    ``text`` or ``json``); the exit code is 1 if any is an error."""
    stream = out if out is not None else sys.stdout
    # the cycle collector stays off until the syntax trees are gone (freed as _print_check returns):
    # turned on while they live, its first collections would walk every one of their objects
    with _no_cycle_collection():
        return _print_check(paths, fmt, stream)


def _print_check(paths: Iterable[PathLike], fmt: str, stream: TextIO) -> int:
    result, diags, sources, _ = _diagnose(paths)
    if fmt == "json":
        stream.write(to_json(diags) + "\n")
    elif diags:
        stream.write(render_all(diags, sources) + "\n")
    else:
        trees = f", {len(result.trees)} fault tree(s)" if result.trees else ""
        stream.write(f"ok: {len(result.rules)} rule(s){trees} in {len(sources)} file(s)\n")
    return 1 if any(d.is_error for d in diags) else 0


def cli_explain_tree(paths: Iterable[PathLike], tree_id: str, out: TextIO | None = None) -> int:
    """``faulttrace check --explain TREE_ID``: the tree, its minimal cut sets
    and the importance of its basic events (diagnostics first, if any)."""
    stream = out if out is not None else sys.stdout
    result, diags, sources, ruleset = _diagnose(paths)
    if diags:
        stream.write(render_all(diags, sources) + "\n\n")
    if ruleset is None or any(d.is_error for d in diags):
        return 1
    plan = ruleset.tree(tree_id)  # as compiled: no second cut-set analysis
    if plan is None:
        known = [t.meta.id for t in result.trees]
        hint = " ".join(did_you_mean(tree_id, known)) or (f"trees: {', '.join(known)}" if known else "no trees are defined")
        stream.write(f"error: no fault tree `{tree_id}` in these files; {hint}\n")
        return 1
    span = plan.tree.span
    stream.write(explain(plan, f"{span.path}:{span.line}") + "\n")
    return 0
