"""Checked rules (``dsl.ir``) -> DuckDB SQL.

Each rule becomes one SELECT over the *prepared* span table of a batch
(``prepare_statements``): the store's table plus integer keys (``_row``,
``_trace``, ``_parent``) and the derived intrinsics the rule set needs
(``_depth``, ``_self``, trace-level ``_t_*`` columns, and the ancestor
closure table for descendant/ancestor relations, the long-form tables of
events and of links followed for ``event``/``link`` relations).  Every structural join
goes through ``_parent``/``_trace``/the closure, which are computed within
one trace, so spans of different traces never meet.

Literals never enter SQL text: each becomes a numbered parameter (``$n``).
The only names that do are the store's table name (quoted by ``quote_ident``)
and attribute columns, whose names ``dsl.projection.column_name`` makes
``[a-z0-9_]`` only.  Nothing here imports Lark.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from dsl import ir
from dsl.ir import Ty
from dsl.projection import EVENT_COLUMN_PREFIX, EVENT_LIST, LINK_LIST, column_name
from dsl.spantree import clipped_sql, covered_by_fan_sql, no_parent_sql, root_key_sql, self_time_sql

SPANS = "__ft_spans"  # prepared span table (temp)
ANCESTORS = "__ft_ancestors"  # (_row, _anc) for every proper ancestor (temp)
_SOURCE = "__ft_source"  # copy of the batch when it has no row ids (a view)
EVENTS = "__ft_events"  # (_row, _trace, _idx, name, time_ns, event attribute columns): one row per event (temp)
LINKS = "__ft_links"  # (_row, _linked): a span and a span of the batch it links to (temp)
BASELINE_TABLE = "__ft_baseline"  # learned baseline the caller registers (optional): service VARCHAR,
# name VARCHAR, p99_self_ns, median_self_ns, mad_self_ns (numbers, in ns), one row per operation
BASELINE_COLUMNS = ("service", "name", "p99_self_ns", "median_self_ns", "mad_self_ns")
_MAX_DEPTH = 256  # guards recursion against parent cycles in bad data
# A chain of more than this many `and`/`or` items goes to DuckDB inside
# ``coalesce(..., FALSE)`` (a no-op: conditions are never NULL), and so do the
# `and` items of such an `or`: DuckDB's optimizer pairs up the conjuncts of a
# WHERE clause (filter pushdown) and the `and` items of an `or` (its
# distributivity rewrite), which for thousands of them costs minutes and
# gigabytes (2,000 conjuncts: 10 s and 2.6 GB; 10,000: killed at 23 GB).
_WIDE_CHAIN = 64

# intrinsic -> SQL over the prepared table (``{v}`` is the span's alias)
_SPAN_SQL = {
    "name": "{v}.name",
    "service": "nullif({v}.service, '')",  # the store writes '' when service.name is missing: nil, as s.resource["service.name"]
    "kind": "{v}.kind",
    "status": "{v}.status_code",
    "status_message": "{v}.status_message",
    "duration": "({v}.end_ns - {v}.start_ns)",
    "self_time": "{v}._self",
    "start": "{v}.start_ns",
    "end": "{v}.end_ns",
    "is_root": "{v}._is_root",
    "depth": "{v}._depth",
    "baseline_p99": "{v}._b_p99",
    "baseline_median": "{v}._b_median",
    # robust z-score of the self time; nil when MAD is 0 (like a division by zero)
    "zscore": "(({v}._self - {v}._b_median_f) / nullif(1.4826 * {v}._b_mad, 0))",
    # an event variable's fields (``EVENTS``)
    "event_name": "{v}.name",
    "event_time": "{v}.time_ns",
}
_NULLABLE_INTRINSICS = {"name", "service", "status_message", "baseline_p99", "baseline_median", "zscore"}
_NEEDS = {"self_time": ("self_time",), "depth": ("depth",), "baseline_p99": ("baseline",),
          "baseline_median": ("baseline",), "zscore": ("baseline", "self_time")}
_STR_FUNCS = {"contains": "contains", "starts_with": "starts_with", "ends_with": "ends_with"}


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule as one SQL statement over the prepared table.

    The statement returns ``(trace_id, span_id, depth, message, explains)``
    rows, one per blamed span (``explains``: the span ids the finding
    explains, NULL for a rule without ``explains``); ``params`` are bound
    positionally to ``$1..$n``."""

    id: str
    meta: ir.RuleMeta
    sql: str
    params: tuple[object, ...]
    needs: frozenset[str]  # derived data the prepare step must build


def quote_ident(name: str) -> str:
    """The one function that puts a name into SQL: ``a.b`` -> ``"a"."b"``."""
    parts = name.split(".")
    if not name or any(p == "" for p in parts):
        raise ValueError(f"invalid table name {name!r}")
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


@dataclass
class _Ctx:
    params: list[object] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    needs: set[str] = field(default_factory=set)
    lambdas: int = 0  # ``any(...)`` lambdas open around the expression being compiled
    # the SQL of a quantifier computed elsewhere (``dsl.columnar``'s shared aggregates), or None to compile it here
    quant_column: Callable[[ir.Quant], str | None] | None = None

    def bind(self, value: object) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def alias(self, var: str) -> str:
        # distinct per name, independent of case (SQL folds identifier case)
        if var not in self.aliases:
            self.aliases[var] = f"v{len(self.aliases)}"
        return self.aliases[var]


def compile_rule(rule: ir.CheckedRule) -> CompiledRule:
    ctx = _Ctx()
    first = rule.bindings[0]
    from_sql = f"{SPANS} AS {ctx.alias(first.var)}"
    for rel in rule.bindings[1:]:
        from_sql += " " + _join(rel, ctx)
    where = _bool(rule.where, ctx) if rule.where is not None else "TRUE"
    blamed = ctx.alias(rule.blame)
    message = _message(rule.message, ctx)
    select = f"{blamed}.trace_id, {blamed}.span_id, {blamed}._depth AS depth, {message} AS message"
    ctx.needs.add("depth")
    sql = f"SELECT {select} FROM {from_sql} WHERE {where}"
    if rule.explains:
        sql = _with_explains(rule, sql, ctx)
    elif len(rule.bindings) > 1:
        # several variable assignments may blame the same span: report it once
        sql = (f"SELECT DISTINCT ON (trace_id, span_id) trace_id, span_id, depth, message, "
               f"CAST(NULL AS BLOB[]) AS explains FROM ({sql}) ORDER BY trace_id, span_id, message")
    else:
        sql = f"SELECT {select}, CAST(NULL AS BLOB[]) AS explains FROM {from_sql} WHERE {where}"
    return CompiledRule(rule.meta.id, rule.meta, sql, tuple(ctx.params), frozenset(ctx.needs))


def _with_explains(rule: ir.CheckedRule, sql: str, ctx: _Ctx) -> str:
    """``sql`` (the rule's findings, one row per assignment of its variables)
    with the span ids each blamed span explains, one row per blamed span.

    In two steps: the assignments that fire (``f``, carrying the columns of
    the rule's variables that the second step reads), then the explained
    spans reached from them by joins (``x``).  A correlated subquery per
    finding would cost a join over the whole batch per rule; joining from
    the few rows that fired costs next to nothing."""
    parts = []
    for ex in rule.explains:
        froms, conds = ["f"], ["TRUE"]
        for q in ex.path:  # every assignment of the quantifiers down to the variable that satisfies them
            src, cond = _subquery_from(q.rel, ctx)
            froms.append(src)
            conds.append(cond if q.where is None else f"{cond} AND {_bool(q.where, ctx)}")
        parts.append(f"SELECT f.__b, {ctx.alias(ex.var)}.span_id AS e FROM {' CROSS JOIN '.join(froms)} "
                     f"WHERE {' AND '.join(conds)}")
    x = " UNION ALL ".join(parts)
    # the columns of `match` variables the joins read travel in `f` (aliases are v<n>, columns [a-z0-9_])
    aliases = {ctx.alias(b.var) for b in rule.bindings}
    used = sorted({(a, c) for a, c in _COLUMN_REF.findall(x) if a in aliases})
    x = _COLUMN_REF.sub(lambda m: f"f.{m[1]}__{m[2]}" if m[1] in aliases else m[0], x)
    carried = "".join(f"{a}.{c} AS {a}__{c}, " for a, c in used)
    fired = sql.replace("SELECT ", f"SELECT {ctx.alias(rule.blame)}._row AS __b, {carried}", 1)
    return (f"WITH f AS MATERIALIZED ({fired}), x AS ({x}), "
            # in span id order: the same list whatever order the plan meets them in (run to run too)
            "xs AS (SELECT __b, list(DISTINCT e ORDER BY e) AS explains FROM x GROUP BY __b), "
            "fs AS (SELECT __b, any_value(trace_id) AS trace_id, any_value(span_id) AS span_id, min(depth) AS depth, "
            "min(message) AS message FROM f GROUP BY __b) "
            "SELECT fs.trace_id, fs.span_id, fs.depth, fs.message, xs.explains FROM fs LEFT JOIN xs ON xs.__b = fs.__b")


_COLUMN_REF = re.compile(r"\b(v\d+)\.([a-z_][a-z0-9_]*)\b")


# ---- relations --------------------------------------------------------------------


def _join(rel: ir.Rel, ctx: _Ctx) -> str:
    v, o = ctx.alias(rel.var), ctx.alias(rel.other)
    if rel.relation in ("event", "link"):
        src, cond = _subquery_from(rel, ctx)
        return f"JOIN {src} ON {cond}"
    if rel.relation in ("descendant", "ancestor"):
        ctx.needs.add("ancestors")
        k = f"k_{v}"
        mine, theirs = ("_row", "_anc") if rel.relation == "descendant" else ("_anc", "_row")
        return (f"JOIN {ANCESTORS} AS {k} ON {k}.{theirs} = {o}._row "
                f"JOIN {SPANS} AS {v} ON {v}._row = {k}.{mine}")
    return f"JOIN {SPANS} AS {v} ON {_rel_condition(rel, v, o)}"


def _rel_condition(rel: ir.Rel, v: str, o: str) -> str:
    return {
        "span": f"{v}._trace = {o}._trace",
        "child": f"{v}._parent = {o}._row",
        "parent": f"{v}._row = {o}._parent",
        "sibling": f"{v}._parent = {o}._parent AND {v}._row <> {o}._row",
        # in program order under the same parent: ended before the other started, started after it ended
        "preceding_sibling": f"{v}._parent = {o}._parent AND {v}._row <> {o}._row AND {v}.end_ns <= {o}.start_ns",
        "following_sibling": f"{v}._parent = {o}._parent AND {v}._row <> {o}._row AND {v}.start_ns >= {o}.end_ns",
    }[rel.relation]


def _subquery_from(rel: ir.Rel, ctx: _Ctx) -> tuple[str, str]:
    """FROM and WHERE of a correlated subquery ranging over ``rel.var``."""
    v, o = ctx.alias(rel.var), ctx.alias(rel.other)
    if rel.relation in ("descendant", "ancestor"):
        ctx.needs.add("ancestors")
        k = f"k_{v}"
        mine, theirs = ("_row", "_anc") if rel.relation == "descendant" else ("_anc", "_row")
        return f"{ANCESTORS} AS {k} JOIN {SPANS} AS {v} ON {v}._row = {k}.{mine}", f"{k}.{theirs} = {o}._row"
    if rel.relation == "event":
        ctx.needs.add("events")
        return f"{EVENTS} AS {v}", f"{v}._row = {o}._row"
    if rel.relation == "link":
        ctx.needs.add("links")
        k = f"k_{v}"
        return f"{LINKS} AS {k} JOIN {SPANS} AS {v} ON {v}._row = {k}._linked", f"{k}._row = {o}._row"
    return f"{SPANS} AS {v}", _rel_condition(rel, v, o)


# ---- expressions ----------------------------------------------------------------------


def nullable(node: ir.Node) -> bool:
    """Whether the SQL for ``node`` may be NULL (nil)."""
    match node:
        case ir.Const():
            return node.value is None
        case ir.Intrinsic():
            return node.name in _NULLABLE_INTRINSICS
        case ir.TraceIntrinsic():
            return node.name in ("root_service", "root_name")
        case ir.AttrValue():
            return True
        case ir.Arith():
            return True  # overflow and division by zero are nil
        case ir.Quant(func="min" | "max" | "avg" | "sum"):
            return True
        case ir.Negate():
            return any(nullable(c) for c in ir.children(node))
        case ir.First():
            return all(nullable(c) for c in node.items)
        case ir.Call():
            return True  # nil in, nil out; json() of text that is not JSON, or a path not there, is nil
        case ir.Element():
            return True
    return False  # booleans are compiled two-valued


def _bool(node: ir.Node, ctx: _Ctx) -> str:
    """SQL for a condition, never NULL: comparisons with nil are false."""
    sql = _value(node, ctx)
    leaf = not isinstance(node, (ir.And, ir.Or, ir.Not, ir.IsSet, ir.Quant, ir.AnyOf))
    if leaf and any(nullable(c) for c in (node, *ir.children(node))):
        return f"coalesce({sql}, FALSE)"
    return sql


def _value(node: ir.Node, ctx: _Ctx) -> str:
    match node:
        case ir.Const():
            return ctx.bind(node.value)
        case ir.Intrinsic():
            ctx.needs.update(_NEEDS.get(node.name, ()))
            return _SPAN_SQL[node.name].format(v=ctx.alias(node.var))
        case ir.TraceIntrinsic():
            ctx.needs.add("trace")
            return f"{ctx.alias(node.var)}._t_{node.name}"
        case ir.AttrValue():
            v = ctx.alias(node.var)
            cols = [f"{v}.{column_name(r)}" for r in node.refs]
            return cols[0] if len(cols) == 1 else f"coalesce({', '.join(cols)})"
        case ir.Compare(left=ir.Quant(by=by)) if by is not None:
            return _grouped_compare(node, ctx)
        case ir.Compare():
            return f"({_value(node.left, ctx)} {'<>' if node.op == '!=' else node.op} {_value(node.right, ctx)})"
        case ir.Regex():
            test = f"regexp_matches({_value(node.operand, ctx)}, {ctx.bind(node.pattern)})"
            return f"(NOT {test})" if node.negated else test
        case ir.StrTest():
            return f"{_STR_FUNCS[node.op]}({_value(node.operand, ctx)}, {_value(node.arg, ctx)})"
        case ir.ArrayHas():
            return f"list_contains({_value(node.operand, ctx)}, {_value(node.element, ctx)})"
        case ir.InList():
            if not node.items:
                return "TRUE" if node.negated else "FALSE"
            items = ", ".join(ctx.bind(i.value) for i in node.items)
            return f"({_value(node.operand, ctx)} {'NOT IN' if node.negated else 'IN'} ({items}))"
        case ir.Arith():
            return _arith(node, ctx)
        case ir.Negate():
            return f"(-{_value(node.operand, ctx)})"
        case ir.And() | ir.Or():
            return _chain(node, ctx)
        case ir.Not():
            return f"(NOT {_bool(node.operand, ctx)})"
        case ir.IsSet():
            return f"({_value(node.operand, ctx)} IS NOT NULL)"
        case ir.Quant():
            shared = ctx.quant_column(node) if ctx.quant_column is not None else None
            return shared if shared is not None else _quant(node, ctx)
        case ir.First():
            return f"coalesce({', '.join(_value(i, ctx) for i in node.items)})"
        case ir.Call():
            return _call(node, ctx)
        case ir.Element():
            return f"__e{ctx.lambdas}"
        case ir.AnyOf():
            operand = _value(node.operand, ctx)
            ctx.lambdas += 1  # a lambda's variable per nesting level: any() inside any() sees both
            try:
                x = f"__e{ctx.lambdas}"
                return f"coalesce(len(list_filter({operand}, lambda {x}: {_bool(node.cond, ctx)})) > 0, FALSE)"
            finally:
                ctx.lambdas -= 1
    raise AssertionError(f"unhandled IR node {node!r}")  # pragma: no cover


def _call(node: ir.Call, ctx: _Ctx) -> str:
    """A value function; every one is nil for a nil argument."""
    args = [_value(a, ctx) for a in node.args]
    match node.func:
        case "len":
            return f"len({args[0]})" if node.args[0].ty.is_array else f"length({args[0]})"
        case "lower" | "upper":
            return f"{node.func}({args[0]})"
        case "substr":  # from the 1-based position, as in SQL; to the end without a length
            return f"substring({args[0]}, {args[1]}{', ' + args[2] if len(args) > 2 else ''})"
        case "split":
            return f"string_split({args[0]}, {args[1]})"
        case "json":
            # text that is not JSON is nil, not an error that would cost the rule its batch
            return f"CASE WHEN json_valid({args[0]}) THEN json_extract_string({args[0]}, {args[1]}) END"
    raise AssertionError(f"unhandled function {node.func}")  # pragma: no cover


def _chain(node: ir.And | ir.Or, ctx: _Ctx) -> str:
    """``(a AND b ...)`` or ``(a OR b ...)``; a wide one opaque to DuckDB's optimizer (``_WIDE_CHAIN``)."""
    wide = len(node.items) > _WIDE_CHAIN
    parts = []
    for item in node.items:
        sql = _bool(item, ctx)
        parts.append(f"coalesce({sql}, FALSE)" if wide and isinstance(node, ir.Or) and isinstance(item, ir.And) else sql)
    sql = "(" + (" AND " if isinstance(node, ir.And) else " OR ").join(parts) + ")"
    return f"coalesce({sql}, FALSE)" if wide else sql


def _arith(node: ir.Arith, ctx: _Ctx) -> str:
    left, right = _value(node.left, ctx), _value(node.right, ctx)
    if node.op in ("/", "%"):
        # division by zero is nil (a double division would give inf)
        left = f"CAST({left} AS DOUBLE)" if node.op == "/" else left
        right = f"nullif({right}, 0)"
    sql = f"({left} {node.op} {right})"
    # overflow is nil too; DuckDB raises unless wrapped in TRY, which it
    # does not allow around a subquery (aggregates are far from overflowing)
    has_subquery = any(isinstance(n, ir.Quant) for n in ir.walk(node))
    return sql if has_subquery else f"TRY{sql}"


def _grouped_compare(node: ir.Compare, ctx: _Ctx) -> str:
    """``agg(... by k) <op> x``: some group of the quantified spans with equal,
    non-nil ``k`` has an aggregate that satisfies the comparison."""
    q: ir.Quant = node.left  # type: ignore[assignment]
    src, cond = _subquery_from(q.rel, ctx)
    if q.where is not None:
        cond += f" AND {_bool(q.where, ctx)}"
    key = _value(q.by, ctx)  # type: ignore[arg-type]
    agg = "count(*)" if q.func == "count" else f"{q.func}({_value(q.value, ctx)})"  # type: ignore[arg-type]
    op = "<>" if node.op == "!=" else node.op
    return (f"EXISTS (SELECT 1 FROM {src} WHERE {cond} AND ({key}) IS NOT NULL "
            f"GROUP BY {key} HAVING coalesce({agg} {op} {_value(node.right, ctx)}, FALSE))")


def _quant(node: ir.Quant, ctx: _Ctx) -> str:
    src, cond = _subquery_from(node.rel, ctx)
    if node.where is not None:
        cond += f" AND {_bool(node.where, ctx)}"
    if node.func == "exists":
        return f"EXISTS (SELECT 1 FROM {src} WHERE {cond})"
    if node.func == "count":
        return f"(SELECT count(*) FROM {src} WHERE {cond})"
    value = _value(node.value, ctx)  # type: ignore[arg-type]
    return f"(SELECT {node.func}({value}) FROM {src} WHERE {cond})"


# ---- fault-tree evidence: which rules could not be evaluated --------------------------


@dataclass(frozen=True, slots=True)
class EvidenceQuery:
    """One grouped scan of the prepared table giving, per trace: its id;
    whether it is broken (a span's parent is missing from it); for each rule
    of ``rule_ids``, whether its condition was undetermined (NULL: an
    attribute it needs is absent) on some span; and for each span condition
    of ``condition_ids`` (house and top events), the earliest span meeting
    it, or NULL: conditions written alike share a column, the
    ``condition_columns``-th after the rules' (a column per condition repeated
    the same span ids, each fetched into Python)."""

    sql: str
    params: tuple[object, ...]
    rule_ids: tuple[str, ...]
    condition_ids: tuple[str, ...]
    needs: frozenset[str]
    condition_columns: tuple[int, ...]  # per condition id, its column among the conditions'


def _local(rule: ir.CheckedRule) -> bool:
    """One variable and no quantifier: the condition is a column expression."""
    return len(rule.bindings) == 1 and (rule.where is None or not any(isinstance(n, ir.Quant) for n in ir.walk(rule.where)))


def three_valued(rule: ir.CheckedRule) -> bool:
    """Whether a rule's condition is evaluated three-valued for fault trees:
    one variable, no quantifier (structural rules are two-valued), and a
    leaf that can be nil."""
    if not _local(rule) or rule.where is None:
        return False
    return any(nullable(n) for n in ir.walk(rule.where) if not isinstance(n, (ir.And, ir.Or, ir.Not, ir.IsSet)))


def foldable(condition: ir.CheckedRule) -> bool:
    """Whether a span condition can go into the evidence scan (else it runs as its own statement)."""
    return _local(condition)


def compile_evidence(rules: list[ir.CheckedRule], conditions: list[ir.CheckedRule]) -> EvidenceQuery:
    """Columns: trace id; ``broken`` as a state byte (2 = unknown, 0 = known);
    one state byte per three-valued rule (2 when the trace is broken or the
    condition was NULL on some span); one span id (or NULL) per condition.

    Each distinct aggregate (its SQL and parameters) is computed once, in a grouped
    subquery the columns read: trees often share a top event or house condition (the
    library's 12 conditions are 5), and every rule column reads ``broken``; each aggregate
    costs ~1 ms of a 100,000-span batch.  A condition's earliest span is the span id at the
    least start among the spans meeting it (a conditional key, not a FILTER clause: DuckDB's
    hash aggregate slows down with each FILTER it carries, ``compile_aggregate``)."""
    aggregates: dict[tuple[str, tuple[tuple[str, object], ...]], int] = {}
    fragments: list[Fragment] = []
    needs: set[str] = set()

    def aggregate(compile_: Callable[[_Ctx], str], var: str = "") -> str:
        ctx = _Ctx(aliases={var: "s"} if var else {})
        sql = compile_(ctx)
        needs.update(ctx.needs)
        key = (sql, tuple((type(p).__name__, p) for p in ctx.params))  # 1, 1.0 and True are equal in Python
        if key not in aggregates:
            aggregates[key] = len(fragments)
            fragments.append(Fragment(sql, tuple(ctx.params)))
        return f"_a{aggregates[key]}"

    broken = aggregate(lambda _: "bool_or(NOT s._is_root AND s._parent IS NULL)")
    cols = ["_trace_id", f"CAST(CASE WHEN {broken} THEN 2 ELSE 0 END AS UTINYINT)"]
    rule_ids, cond_ids = [], []
    for rule in rules:
        if not three_valued(rule):
            continue
        unknown = aggregate(lambda ctx, r=rule: f"bool_or(({_kleene(r.where, ctx)}) IS NULL)",  # type: ignore[misc]
                            rule.bindings[0].var)
        cols.append(f"CAST(CASE WHEN {broken} OR {unknown} THEN 2 ELSE 0 END AS UTINYINT)")
        rule_ids.append(rule.meta.id)
    cond_cols: dict[str, int] = {}  # a condition's aggregate -> its column among the conditions'
    cond_of: list[int] = []  # per condition, that column
    for cond in conditions:
        def earliest(ctx: _Ctx, c: ir.CheckedRule = cond) -> str:
            if c.where is None:
                return "arg_min(s.span_id, s.start_ns)"
            return f"arg_min(s.span_id, CASE WHEN {_bool(c.where, ctx)} THEN s.start_ns END)"
        column = aggregate(earliest, cond.bindings[0].var)
        cond_cols.setdefault(column, len(cond_cols))
        cond_ids.append(cond.meta.id)
        cond_of.append(cond_cols[column])
    texts, params = renumber(fragments)
    inner = ", ".join(["any_value(s.trace_id) AS _trace_id", *(f"{t} AS _a{i}" for i, t in enumerate(texts))])
    sql = f"SELECT {', '.join([*cols, *cond_cols])} FROM (SELECT {inner} FROM {SPANS} AS s GROUP BY s._trace)"
    return EvidenceQuery(sql, params, tuple(rule_ids), tuple(cond_ids), frozenset(needs), tuple(cond_of))


def _kleene(node: ir.Node, ctx: _Ctx) -> str:
    """SQL for a condition in SQL's own three-valued logic (NULL = unknown),
    i.e. ``_bool`` without the ``coalesce(..., FALSE)`` around nil-able leaves."""
    match node:
        case ir.And():
            return "(" + " AND ".join(_kleene(i, ctx) for i in node.items) + ")"
        case ir.Or():
            return "(" + " OR ".join(_kleene(i, ctx) for i in node.items) + ")"
        case ir.Not():
            return f"(NOT {_kleene(node.operand, ctx)})"
    return _value(node, ctx)


# ---- messages ---------------------------------------------------------------------


def _message(parts: tuple[str | ir.Node, ...], ctx: _Ctx) -> str:
    pieces = [ctx.bind(p) if isinstance(p, str) else _render(p, ctx) for p in parts]
    if not pieces:
        return ctx.bind("")
    return f"concat({', '.join(pieces)})"


def _render(node: ir.Node, ctx: _Ctx) -> str:
    """SQL text for a value in a message; nil renders as ``nil``."""
    x = _value(node, ctx)
    match node.ty:
        case Ty.DURATION:
            s = (f"CASE WHEN abs({x}) >= 1e9 THEN printf('%.3gs', {x} / 1e9) "
                 f"WHEN abs({x}) >= 1e6 THEN printf('%.4gms', {x} / 1e6) "
                 f"WHEN abs({x}) >= 1e3 THEN printf('%.4gus', {x} / 1e3) "
                 f"ELSE printf('%dns', CAST({x} AS BIGINT)) END")
        case Ty.TIME:
            s = f"strftime(make_timestamp(CAST({x} AS BIGINT) // 1000), '%Y-%m-%dT%H:%M:%S.%fZ')"
        case Ty.KIND:
            names = ", ".join(f"'{k}'" for k in ir.KINDS)
            s = f"[{names}][{x} + 1]"
        case Ty.STATUS:
            names = ", ".join(f"'{k}'" for k in ir.STATUSES)
            s = f"[{names}][{x} + 1]"
        case Ty.BOOL:
            s = f"CASE WHEN {x} THEN 'true' WHEN NOT {x} THEN 'false' END"
        case _:
            s = f"CAST({x} AS VARCHAR)"
    return f"coalesce({s}, 'nil')"


# ---- the prepare step -----------------------------------------------------------------


# the trace's root span, as dsl.spantree defines it for the processor's verdicts too
_ROOT = root_key_sql("s", no_parent="s._is_root", parent_found="s._parent IS NOT NULL")
# the trace-level values (``trace.…``) by column, as aggregates over the trace's rows of ``s``
# the span columns of ``s`` a trace value reads besides its times, ids and root key
_TRACE_READS = {"_t_root_service": ("service",), "_t_root_name": ("name",), "_t_error_count": ("status_code",)}
_TRACE_VALUES = {"_t_duration": "max(end_ns) - min(start_ns)",
                 "_t_root_service": f"nullif(arg_min(service, {_ROOT}), '')",
                 "_t_root_name": f"arg_min(name, {_ROOT})",
                 "_t_span_count": "count(*)",
                 "_t_error_count": "count(*) FILTER (WHERE status_code = 2)"}
# the baseline intrinsics by column, from the learned baseline's row for the span's operation (``bl``)
_BASELINE_VALUES = {"_b_p99": "CAST(round(bl.p99) AS BIGINT)", "_b_median": "CAST(round(bl.med) AS BIGINT)",
                    "_b_median_f": "bl.med", "_b_mad": "bl.mad"}
_BASELINE_TYPES = {"_b_p99": "BIGINT", "_b_median": "BIGINT", "_b_median_f": "DOUBLE", "_b_mad": "DOUBLE"}


def prepare_statements(table: str, needs: frozenset[str], columns: tuple[str, ...], row_key: str | None = "rowid",
                       baseline: bool = False, absent: Mapping[str, str] | None = None,
                       reads: Collection[str] | None = None) -> list[str]:
    """Statements that build the prepared tables for one batch in ``table``.

    ``columns`` are the store columns the rules read (the contract's
    intrinsics and projected attributes; anything else the store keeps, such
    as raw span bytes, is not copied).  Derived values are computed on a
    narrow key table first and joined onto the one wide copy by row id;
    values the rule set does not need are not computed.  ``row_key`` is the
    column that numbers the rows: ``rowid`` for a table, a dense ``_row``
    column the caller supplies (e.g. on an Arrow batch, saving a copy); with
    neither (a plain view) the columns are copied first.  ``baseline``: whether
    ``BASELINE_TABLE`` exists on the connection (when a rule needs it); without
    it the baseline intrinsics are nil.  ``absent``: attribute columns no span of the batch
    has a value in (name -> DuckDB type), left out of the copies; the statements that read
    them read a typed NULL instead (``with_nulls``).  ``reads``: the columns the batch's
    statements read of the prepared span table (``read_columns``), the only ones copied into it
    besides those the events and links tables are built from, and the only trace and baseline
    values (``_t_*``, ``_b_*``) computed; None: all of them."""
    absent = absent or {}
    columns = tuple(c for c in columns if c not in absent)
    lists = {c for c in columns if ("events" in needs and c.startswith(EVENT_COLUMN_PREFIX))
             or ("links" in needs and c == column_name(LINK_LIST))}
    copied = tuple(c for c in columns if reads is None or c in reads or c in lists)
    src = quote_ident(table)
    stmts: list[str] = []
    if row_key is None:
        stmts.append(f"CREATE OR REPLACE TEMP TABLE {_SOURCE} AS SELECT {', '.join(columns)} FROM {src}")
        src, row_key = _SOURCE, "rowid"

    def read(derived: dict[str, str]) -> dict[str, str]:
        # the trace and baseline values the batch's statements read: each costs its aggregate or
        # join and its copy (the library reads 2 of their 9)
        return {c: sql for c, sql in derived.items() if reads is None or c in reads}

    trace = read(_TRACE_VALUES) if "trace" in needs else {}
    base = read(_BASELINE_VALUES) if "baseline" in needs else {}
    # the span columns the derived values read beyond times and ids (only the trace values'): each
    # is copied into both materialized steps (k, s), strings for service and name
    carried = [c for c in ("status_code", "service", "name") if any(c in _TRACE_READS.get(t, ()) for t in trace)]
    ctes = [
        # a dense integer per trace: integer joins are much cheaper than on 16-byte ids
        f"tids AS (SELECT trace_id, CAST(row_number() OVER () AS BIGINT) AS _trace FROM (SELECT DISTINCT trace_id FROM {src}))",
        f"k AS MATERIALIZED (SELECT b.{row_key} AS _row, tids._trace, b.span_id, b.parent_span_id, b.start_ns, b.end_ns"
        f"{''.join(f', b.{c}' for c in carried)} FROM {src} AS b JOIN tids ON tids.trace_id = b.trace_id)",
        # spans whose parent is in the batch; a duplicated span id keeps its first row
        "ids AS (SELECT _trace, span_id, min(_row) AS _row FROM k GROUP BY _trace, span_id)",
        f"s AS MATERIALIZED (SELECT k._row, k._trace, k.start_ns, k.end_ns{''.join(f', k.{c}' for c in carried)}, "
        f"p._row AS _parent, {no_parent_sql('k.parent_span_id')} AS _is_root "
        "FROM k LEFT JOIN ids AS p ON p._trace = k._trace AND p.span_id = k.parent_span_id)",
        f"d(_row, _depth) AS (SELECT _row, 0 FROM s WHERE _parent IS NULL "
        f"UNION ALL SELECT s._row, d._depth + 1 FROM s JOIN d ON s._parent = d._row WHERE d._depth < {_MAX_DEPTH})",
        # the same rows (a depth is never negative): DuckDB estimates a recursive CTE at ~40 rows a
        # span, and joined to it the derived values looked bigger than the batch, so the copy's join
        # built its hash table on the wide batch instead (~45 ms of 100,000 spans, DuckDB 2.0.1);
        # a filter's estimated selectivity brings the estimate back under the batch's
        "dd AS (SELECT _row, _depth FROM d WHERE _depth >= 0)",
    ]
    cols = ["s._row", "s._trace", "s._parent", "s._is_root", "CAST(coalesce(dd._depth, 0) AS BIGINT) AS _depth"]
    joins = ["LEFT JOIN dd ON dd._row = s._row"]
    if "self_time" in needs:
        # keyed by row: a duplicated span id's children are its first copy's (``ids``), so self time is
        # negative only for a span that ends before it starts
        ctes.append(f"cl AS MATERIALIZED ({clipped_sql('s', key=('_row',), ref=('_parent',))})")
        ctes.append(f"cov AS ({covered_by_fan_sql('cl', ('_row',))})")
        cols.append(f"CAST({self_time_sql('s', 'cov.covered')} AS BIGINT) AS _self")
        joins.append("LEFT JOIN cov ON cov._row = s._row")
    if trace:
        ctes.append(f"tr AS (SELECT _trace, {', '.join(f'{sql} AS {c}' for c, sql in trace.items())} "
                    "FROM s GROUP BY _trace)")
        cols.append(", ".join(f"tr.{c}" for c in trace))
        joins.append("LEFT JOIN tr ON tr._trace = s._trace")
    # the baseline values join the copy, by the batch's own service and name
    copy_cols, copy_joins = "", ""
    if base and baseline:
        # one row per operation even if the caller's table repeats one
        ctes.append(
            "bl AS (SELECT service, name, max(CAST(p99_self_ns AS DOUBLE)) AS p99, "
            "max(CAST(median_self_ns AS DOUBLE)) AS med, max(CAST(mad_self_ns AS DOUBLE)) AS mad "
            f"FROM {BASELINE_TABLE} GROUP BY service, name)"
        )
        copy_cols = "".join(f", {sql} AS {c}" for c, sql in base.items())
        copy_joins = " LEFT JOIN bl ON bl.service = t.service AND bl.name = t.name"
    elif base:
        copy_cols = "".join(f", CAST(NULL AS {_BASELINE_TYPES[c]}) AS {c}" for c in base)
    # the derived values and the copy in one statement: a table of the derived values would
    # cost its writing and a scan (~10 ms of 100,000 spans)
    ctes.append(f"x AS (SELECT {', '.join(cols)} FROM s {' '.join(joins)})")
    stmts.append(
        f"CREATE OR REPLACE TEMP TABLE {SPANS} AS WITH RECURSIVE {', '.join(ctes)} "
        f"SELECT {', '.join('t.' + c for c in copied)}, x.*{copy_cols} FROM {src} AS t JOIN x ON x._row = t.{row_key}"
        f"{copy_joins}"
    )
    if "ancestors" in needs:
        stmts.append(ancestors_statement())
    if "events" in needs:
        stmts.append(with_nulls(_events_statement(copied), absent))
    if "links" in needs:
        # a linked span absent from the batch is no row; a duplicated span id links to each copy once
        lk = column_name(LINK_LIST)
        stmts.append(with_nulls(
            f"CREATE OR REPLACE TEMP TABLE {LINKS} AS SELECT DISTINCT l._row, t._row AS _linked "
            f"FROM (SELECT s._row, unnest(s.{lk}) AS k FROM {SPANS} AS s) AS l JOIN {SPANS} AS t "
            "ON t.trace_id = struct_extract(l.k, 'trace_id') AND t.span_id = struct_extract(l.k, 'span_id')", absent))
    return stmts


def ancestors_statement() -> str:
    """The statement that builds ``ANCESTORS``: a row per span and each of its proper ancestors,
    up the parent chain (``_MAX_DEPTH`` steps at most: a parent cycle in bad data repeats)."""
    return (f"CREATE OR REPLACE TEMP TABLE {ANCESTORS} AS WITH RECURSIVE a(_row, _anc, _dist) AS ("
            f"SELECT _row, _parent, 1 FROM {SPANS} WHERE _parent IS NOT NULL "
            f"UNION ALL SELECT a._row, s._parent, a._dist + 1 FROM a JOIN {SPANS} AS s ON s._row = a._anc "
            f"WHERE s._parent IS NOT NULL AND a._dist < {_MAX_DEPTH}) SELECT _row, _anc FROM a")


def _events_statement(columns: tuple[str, ...]) -> str:
    """The long form of the spans' events: one row per event (index ``_idx`` from 1, in the
    span's order), with its name, time and the event attribute columns the rules read
    (lists aligned with the events, ``EVENT_COLUMN_PREFIX``), taken element by element.
    The span table's columns are qualified (``s.``) so that ``with_nulls`` can replace the
    event list when no span of the batch has one: the table is then empty."""
    ev = column_name(EVENT_LIST)
    attrs = [c for c in columns if c.startswith(EVENT_COLUMN_PREFIX) and c != ev]
    picked = "".join(f", {c}[i] AS {c}" for c in attrs)
    return (f"CREATE OR REPLACE TEMP TABLE {EVENTS} AS SELECT _row, _trace, i AS _idx, "
            f"struct_extract({ev}[i], 'name') AS name, struct_extract({ev}[i], 'time') AS time_ns{picked} "
            f"FROM (SELECT s._row, s._trace, s.{ev} AS {ev}{''.join(f', s.{c} AS {c}' for c in attrs)}, "
            f"unnest(range(1, len(s.{ev}) + 1)) AS i FROM {SPANS} AS s WHERE len(s.{ev}) > 0)")


def with_nulls(sql: str, absent: Mapping[str, str]) -> str:
    """``sql`` with every reference ``alias.column`` to a column of ``absent`` (name -> DuckDB
    type: attribute columns no span of the batch has a value in) replaced by a NULL of its
    type, so that the prepare step need not copy columns of nothing but NULLs.  Compiled SQL
    names an attribute column only qualified by a table alias (``v0.a_s_...``), and literals
    never enter its text (they are parameters), so the pattern meets nothing else; a carried
    column's alias (``v0__a_s_...`` in ``_with_explains``) is another name and stays."""
    if not absent:
        return sql
    return _QUALIFIED.sub(lambda m: f"CAST(NULL AS {absent[m[1]]})" if m[1] in absent else m[0], sql)


def read_columns(sql: Iterable[str]) -> frozenset[str]:
    """The columns statements ``sql`` read of a table by alias (``v0.name``): compiled SQL
    reads the prepared span table's columns only so (the names of other tables' columns, and
    of the aliases' own, come with them)."""
    return frozenset(m[1] for text in sql for m in _QUALIFIED.finditer(text))


_QUALIFIED = re.compile(r"\b[a-z_][a-z0-9_]*\.([a-z0-9_]+)\b")


def cleanup_statements() -> list[str]:
    return [f"DROP TABLE IF EXISTS {t}" for t in (SPANS, ANCESTORS, EVENTS, LINKS, _SOURCE)]


# ---- many rules as columns of one scan (``dsl.columnar``) -------------------------------

# A quantifier over these relations whose condition reads only its own variable is one
# aggregate per span of the relation's grouping: (FROM with the variable as ``{v}``, the
# group key, the column of the quantifying span it equals).
_GROUPED = {
    "span": (f"{SPANS} AS {{v}}", "{v}._trace", "_trace"),
    "child": (f"{SPANS} AS {{v}}", "{v}._parent", "_row"),
    "descendant": (f"{ANCESTORS} AS k JOIN {SPANS} AS {{v}} ON {{v}}._row = k._row", "k._anc", "_row"),
    "ancestor": (f"{ANCESTORS} AS k JOIN {SPANS} AS {{v}} ON {{v}}._row = k._anc", "k._row", "_row"),
}




def _descendants_of(name: str, counted: str) -> str:
    """A CTE ``name`` with the rows of ``ANCESTORS`` (``_row``, ``_anc``, ``_dist``) whose ``_row``
    is a span ``v`` meeting ``counted``: walked up from those spans as ``ancestors_statement`` walks
    up from every span, so the same rows, repeats on a parent cycle too.  A quantifier over
    descendants groups by ``_anc`` the rows whose descendant meets its condition; in healthy
    traffic few spans do (an error), and building every span's ancestors for them cost ~25 ms of
    a 100,000-span batch."""
    return (f"{name}(_row, _anc, _dist) AS (SELECT v._row, v._parent, 1 FROM {SPANS} AS v "
            f"WHERE v._parent IS NOT NULL AND ({counted}) "
            f"UNION ALL SELECT a._row, s._parent, a._dist + 1 FROM {name} AS a JOIN {SPANS} AS s ON s._row = a._anc "
            f"WHERE s._parent IS NOT NULL AND a._dist < {_MAX_DEPTH})")


def _ancestors_of(name: str, counted: str) -> str:
    """A CTE ``name`` with the rows of ``ANCESTORS`` whose ``_anc`` is a span ``v`` meeting
    ``counted``, walked down from those spans: the ``_dist``-th parent of a span is one span, so
    each row of the walk up from every span (``ancestors_statement``) that ends at such a span is
    one row of this walk down from it, and no other."""
    return (f"{name}(_row, _anc, _dist) AS (SELECT c._row, v._row, 1 FROM {SPANS} AS v "
            f"JOIN {SPANS} AS c ON c._parent = v._row WHERE ({counted}) "
            f"UNION ALL SELECT c._row, a._anc, a._dist + 1 FROM {name} AS a JOIN {SPANS} AS c ON c._parent = a._row "
            f"WHERE a._dist < {_MAX_DEPTH})")


# the grouped sources over ``ANCESTORS`` (``_GROUPED``), and the CTE of their rows for the spans
# meeting a condition (``scan_statement``)
_CLOSURES: dict[str, Callable[[str, str], str]] = {
    _GROUPED["descendant"][0].format(v="v"): _descendants_of,
    _GROUPED["ancestor"][0].format(v="v"): _ancestors_of,
}


@dataclass(frozen=True, slots=True)
class Fragment:
    """A piece of SQL with its own parameters (``$1..$n``, in order) and the derived data it needs."""

    sql: str
    params: tuple[object, ...]
    needs: frozenset[str] = frozenset()


def renumber(fragments: list[Fragment]) -> tuple[list[str], tuple[object, ...]]:
    """The fragments' SQL with parameters numbered through, and all parameters in order.
    ``$n`` occurs in compiled SQL only as a parameter (literals are bound, identifiers ``[a-z0-9_]``)."""
    texts: list[str] = []
    params: list[object] = []
    for frag in fragments:
        offset = len(params)
        texts.append(_PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", frag.sql))
        params += frag.params
    return texts, tuple(params)


_PARAM = re.compile(r"\$(\d+)")


def _vars(node: ir.Node) -> set[str]:
    return {n.var for n in ir.walk(node) if isinstance(n, ir.Intrinsic | ir.TraceIntrinsic | ir.AttrValue)}


def shareable(q: ir.Quant, outer: str) -> bool:
    """Whether ``q`` is an aggregate per span of ``outer`` that rules can share: a
    quantifier over a relation to ``outer``, without ``by``, whose condition and value read
    only the quantified variable and ``outer`` (no quantifier inside)."""
    if q.by is not None or q.rel.other != outer:
        return False
    inner = [n for n in (q.where, q.value) if n is not None]
    if any(isinstance(n, ir.Quant) for root in inner for n in ir.walk(root)):
        return False
    return all(_vars(root) <= {q.rel.var, outer} for root in inner)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A shareable quantifier as an aggregate per quantifying span of the spans meeting its
    condition: over ``source`` (FROM, the group key, the column of the quantifying span it
    equals; aggregates of one source share a scan), and ``empty``, what it says of a span
    with no related span at all (``exists``: false, ``count``: 0, the others nil)."""

    source: tuple[str, str, str]
    frag: Fragment
    empty: str | None


def compile_aggregate(q: ir.Quant) -> Aggregate:
    """``q`` (``shareable``) as an ``Aggregate``.  One whose condition reads only its own
    variable over a relation with a grouping (``_GROUPED``) is grouped by that relation's
    key; any other is grouped by the quantifying span over the join of the relation
    (the quantifying span as ``o``): what DuckDB makes of the correlated subquery, once."""
    ctx = _Ctx(aliases={q.rel.var: "v", q.rel.other: "o"})
    own = all(_vars(n) <= {q.rel.var} for n in (q.where, q.value) if n is not None)
    if own and q.rel.relation in _GROUPED:
        src, key, col = _GROUPED[q.rel.relation]
        source = (src.format(v="v"), key.format(v="v"), col)
        if q.rel.relation in ("descendant", "ancestor"):
            ctx.needs.add("ancestors")
    else:
        src, on = _subquery_from(q.rel, ctx)
        source = (f"{SPANS} AS o JOIN {src} ON {on}", "o._row", "_row")
    # conditional aggregates, not FILTER clauses: DuckDB's hash aggregate slows down with
    # each FILTER it carries (200 of them: 1 s over 100,000 rows, against 0.1 s this way)
    cond = _bool(q.where, ctx) if q.where is not None else None
    if q.func == "exists":
        agg, empty = (f"bool_or({cond})" if cond else "TRUE"), "FALSE"
    elif q.func == "count":
        agg, empty = (f"count_if({cond})" if cond else "count(*)"), "0"
    else:
        value = _value(q.value, ctx)  # type: ignore[arg-type]
        agg, empty = f"{q.func}({f'CASE WHEN {cond} THEN {value} END' if cond else value})", None
    return Aggregate(source, Fragment(agg, tuple(ctx.params), frozenset(ctx.needs)), empty)


def aggregate_column(source: int, i: int, empty: str | None) -> str:
    """The SQL that reads aggregate ``i`` of grouped source ``source`` in ``scan_statement``'s
    rows (``empty`` for a span no group has)."""
    col = f"g{source}._s{i}"
    return f"coalesce({col}, {empty})" if empty is not None else col


def compile_local(rule: ir.CheckedRule, quant_column: Callable[[ir.Quant], str | None]) -> tuple[Fragment, Fragment]:
    """The condition (never NULL) and message of a rule of one variable, over the prepared
    table as ``v0``; the condition's quantifiers are the columns ``quant_column`` gives
    (``aggregate_column``), the message's are subqueries (run for the spans that fired only).
    Raises ``NotLocal`` if a quantifier of the condition has no column (the rule then runs alone)."""
    def column(q: ir.Quant) -> str:
        col = quant_column(q)
        if col is None:
            raise NotLocal(rule.meta.id)
        return col

    ctx = _Ctx(aliases={rule.bindings[0].var: "v0"}, quant_column=column)
    cond = Fragment(_bool(rule.where, ctx) if rule.where is not None else "TRUE", tuple(ctx.params), frozenset(ctx.needs))
    ctx = _Ctx(aliases={rule.bindings[0].var: "v0"})
    message = _message(rule.message, ctx)
    return cond, Fragment(message, tuple(ctx.params), frozenset(ctx.needs))


class NotLocal(Exception):
    """A rule's quantifier has no shared column: it runs as its own statement."""


def _counted_rows(agg: str) -> str | None:
    """The condition of the rows an aggregate of ``compile_aggregate`` counts, when the others
    cannot change it: ``bool_or(c)`` (exists) and ``count_if(c)`` (count).  A group without such
    rows then has no row at all, which ``aggregate_column`` reads as its ``empty`` (false, 0), what
    the aggregate says of it.  None for the other forms (``count(*)``, a value's aggregate)."""
    for func in ("bool_or(", "count_if("):
        if agg.startswith(func) and agg.endswith(")"):
            return agg[len(func):-1]
    return None


def scan_statement(masks: list[list[str]], groups: dict[int, tuple[tuple[str, str, str], list[tuple[int, str]]]]) -> str:
    """A scan of the prepared table giving ``_row`` and one BIGINT ``m<j>`` per list of
    conditions in ``masks`` (at most 63 each), bit ``b`` set where the ``b``-th condition
    holds, for the rows where one holds.  The masks are filtered after the materialized scan:
    DuckDB would push a filter on them (``m0 <> 0 OR ...``) into the scan and compute every
    condition twice.  ``groups`` are the aggregates the conditions read:
    per source index, the source (``Aggregate.source``) and its aggregates (index, SQL),
    computed in the statement, each source's in one grouped scan.  Computed here, not once
    in a table for every scan: a table of 100,000 rows and hundreds of columns cost more to
    write than the aggregates cost to compute."""
    ctes, joins = [], []
    for g, ((src, key, outer), aggs) in groups.items():
        cols = ", ".join(f"{sql} AS _s{i}" for i, sql in aggs)
        conds = [_counted_rows(sql) for _, sql in aggs]
        # rows no aggregate counts are left out before the grouping (and the join a source may
        # make): in healthy traffic few spans meet the conditions (an error, an exception)
        counted = " OR ".join(f"({c})" for c in conds) if all(conds) else ""  # type: ignore[misc]
        if counted and src in _CLOSURES:
            # the closure pairs of the counted spans only, not every span's ancestors
            ctes.append(_CLOSURES[src](f"_c{g}", counted))
            src = src.replace(f"{ANCESTORS} AS k", f"_c{g} AS k")
        where = f" WHERE {counted}" if counted else ""
        ctes.append(f"g{g} AS (SELECT {key} AS _key, {cols} FROM {src}{where} GROUP BY {key})")
        joins.append(f" LEFT JOIN g{g} ON g{g}._key = v0.{outer}")
    cols = []
    for j, conds in enumerate(masks):
        if not 0 < len(conds) <= 63:
            raise ValueError("a mask holds 1 to 63 conditions")
        bits = " + ".join(f"CASE WHEN {c} THEN CAST({1 << b} AS BIGINT) ELSE CAST(0 AS BIGINT) END"
                          for b, c in enumerate(conds))
        cols.append(f"({bits}) AS m{j}")
    recursive = "RECURSIVE " if any(c.startswith("_c") for c in ctes) else ""
    with_ = f"WITH {recursive}{', '.join(ctes)} " if ctes else ""
    scan = f"{with_}SELECT v0._row, {', '.join(cols)} FROM {SPANS} AS v0{''.join(joins)}"
    # the rows where some condition holds, usually few: a filter on the materialized scan's
    # masks cannot be pushed into it (which would compute every condition twice)
    some = " OR ".join(f"m{j} <> 0" for j in range(len(masks)))
    return f"WITH __scan AS MATERIALIZED ({scan}) SELECT * FROM __scan WHERE {some}"


def render_statement(fired: str, messages: list[str]) -> str:
    """Per distinct row of ``fired`` (``_row``, ``__msg``): the span's trace id, span id and
    depth and the ``__msg``-th message rendered for it."""
    whens = " ".join(f"WHEN {i} THEN {m}" for i, m in enumerate(messages))
    return (f"SELECT f._row, f.__msg, v0.trace_id, v0.span_id, v0._depth, CASE f.__msg {whens} END AS message "
            f"FROM (SELECT DISTINCT _row, __msg FROM {fired}) AS f JOIN {SPANS} AS v0 ON v0._row = f._row")
