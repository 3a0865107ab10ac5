"""Fault trees: Boolean analysis at compile time, three-valued evaluation at run time.

Compile time (``TreePlan``): minimal cut sets by bottom-up MOCUS over the
negation normal form of the cause, a reduced ordered BDD of the cause
(``Bdd``), Birnbaum and Fussell-Vesely importance from the priors, and the
checks behind warnings W010 (a gate can never fire) and W011 (a gate or event
never matters).  Run time (``evaluate_trees``): per trace, each basic event is
true (its rule fired), false, or unknown (its rule could not be evaluated);
the top event is evaluated in Kleene's three-valued logic, and its
probability given the evidence is the tree's confidence: exact from the BDD
for up to ``EXACT_LIMIT`` variables, the rare-event approximation over the
minimal cut sets beyond.  Only traces showing the top event are looked at,
and verdicts are memoized per evidence pattern, so the Boolean and
probability work grows with the number of distinct patterns, not of traces.

This module knows no SQL; ``dsl.api`` feeds it the per-trace evidence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from dsl import ir

T = TypeVar("T")

EXACT_LIMIT = 30  # variables; beyond, the rare-event approximation
CUT_SET_LIMIT = 10_000  # cut sets kept per tree (MOCUS can blow up on wide atleast gates)
DEFAULT_PRIOR = 0.01
PROBE = "\0probe"  # a fresh variable standing for a sub-gate (W011)

# evidence states of a basic event in one trace
FALSE, TRUE, UNKNOWN = 0, 1, 2

Literal = tuple[str, bool]  # (event name, positive)
CutSet = frozenset[Literal]


def literal_text(lit: Literal) -> str:
    return lit[0] if lit[1] else f"not {lit[0]}"


def cut_set_text(cs: Iterable[Literal]) -> tuple[str, ...]:
    """A cut set as event ids (``not x`` for a complemented event), in a stable order."""
    return tuple(literal_text(lit) for lit in sorted(cs, key=lambda lit: (lit[0], not lit[1])))


# ---- negation normal form and minimal cut sets (bottom-up MOCUS) --------------------


@dataclass(frozen=True, slots=True)
class _Const:
    value: bool


def leaves(node: ir.FtNode) -> list[str]:
    """Event names under ``node``, in first-seen (depth-first) order."""
    out: dict[str, None] = {}

    def walk(n: ir.FtNode) -> None:
        if isinstance(n, ir.FtEvent):
            out.setdefault(n.name)
        else:
            for item in n.items:
                walk(item)

    walk(node)
    return list(out)


def substitute(node: ir.FtNode, constants: Mapping[str, bool]) -> ir.FtNode | _Const:
    """``node`` with the named events replaced by constants, simplified."""
    if isinstance(node, ir.FtEvent):
        return _Const(constants[node.name]) if node.name in constants else node
    items = [substitute(i, constants) for i in node.items]
    if node.op == "not":
        (x,) = items
        return _Const(not x.value) if isinstance(x, _Const) else ir.FtGate("not", (x,), name=node.name)
    k = {"and": len(items), "or": 1}.get(node.op, node.k)
    trues = sum(1 for i in items if isinstance(i, _Const) and i.value)
    rest = tuple(i for i in items if not isinstance(i, _Const))
    k -= trues
    if k <= 0:
        return _Const(True)
    if k > len(rest):
        return _Const(False)
    op = "and" if k == len(rest) else "or" if k == 1 else "atleast"
    if len(rest) == 1:
        return rest[0]
    return ir.FtGate(op, rest, k if op == "atleast" else 0, node.name)


def minimal_cut_sets(node: ir.FtNode | _Const, limit: int = CUT_SET_LIMIT) -> tuple[list[CutSet], bool]:
    """Minimal cut sets of ``node`` (literals; complemented events where
    ``not`` applies to them) and whether ``limit`` truncated the list."""
    truncated = False
    memo: dict[tuple[int, bool], list[CutSet]] = {}

    def cap(sets: list[CutSet]) -> list[CutSet]:
        nonlocal truncated
        sets = _minimize(sets)
        if len(sets) > limit:
            truncated = True
            sets = sets[:limit]
        return sets

    def go(n: ir.FtNode | _Const, positive: bool) -> list[CutSet]:
        if isinstance(n, _Const):
            return [frozenset()] if n.value == positive else []
        key = (id(n), positive)
        if key in memo:
            return memo[key]
        if isinstance(n, ir.FtEvent):
            out = [frozenset({(n.name, positive)})]
        elif n.op == "not":
            out = go(n.items[0], not positive)
        else:
            size = len(n.items)
            k = {"and": size, "or": 1}.get(n.op, n.k)
            if not positive:  # De Morgan: not(atleast k of n) = atleast n-k+1 of the complements
                k = size - k + 1
            out = _atleast(k, [go(i, positive) for i in n.items], cap)
        memo[key] = out
        return out

    return go(node, True), truncated


def _atleast(k: int, children: list[list[CutSet]], cap: Callable[[list[CutSet]], list[CutSet]]) -> list[CutSet]:
    """Cut sets of ``atleast k of`` the children (k=1: or, k=n: and), by the
    recurrence T(i, k) = (c_i and T(i+1, k-1)) or T(i+1, k)."""
    out = _band(k, len(children), [frozenset()], [],
                lambda i, with_i, without_i: cap(_product(children[i], with_i) + without_i))
    return list(out)  # not the shared base-case list


def _band(k: int, n: int, yes: T, no: T, step: Callable[[int, T, T], T]) -> T:
    """T(0, k) of the recurrence T(i, need) = step(i, T(i+1, need-1), T(i+1, need)),
    with T = ``yes`` once nothing more is needed and ``no`` once fewer than
    ``need`` of the ``n`` inputs are left: bottom up, the pairs reachable from
    (0, k) once each, in a loop (a gate may have thousands of inputs; recursion
    would be as deep)."""

    def t(row: dict[int, T], i: int, need: int) -> T:
        if need <= 0:
            return yes
        if n - i < need:
            return no
        return row[need]

    below: dict[int, T] = {}  # T(i + 1, need) for the needs reachable at i + 1
    for i in range(n - 1, -1, -1):
        below = {need: step(i, t(below, i + 1, need - 1), t(below, i + 1, need))
                 for need in range(max(1, k - i), min(k, n - i) + 1)}
    return t(below, 0, k)


def _product(a: list[CutSet], b: list[CutSet]) -> list[CutSet]:
    return [x | y for x in a for y in b]


def _minimize(sets: list[CutSet]) -> list[CutSet]:
    """Drop contradictory sets (x and not x) and supersets of other sets."""
    consistent = {s for s in sets if not any((name, not pos) in s for name, pos in s)}
    kept: list[CutSet] = []
    for s in sorted(consistent, key=lambda s: (len(s), cut_set_text(s))):
        if not any(k <= s for k in kept):
            kept.append(s)
    return kept


# ---- reduced ordered BDD ----------------------------------------------------------------


class Bdd:
    """A reduced ordered binary decision diagram over named variables.

    Nodes are ints: 0 is false, 1 is true; others index ``(level, low, high)``."""

    def __init__(self, order: Sequence[str]) -> None:
        self.order = list(order)
        self.level = {v: i for i, v in enumerate(self.order)}
        self.nodes: list[tuple[int, int, int]] = [(len(order), 0, 0), (len(order), 1, 1)]
        self._unique: dict[tuple[int, int, int], int] = {}
        self._ite: dict[tuple[int, int, int], int] = {}

    def _mk(self, level: int, low: int, high: int) -> int:
        if low == high:
            return low
        key = (level, low, high)
        node = self._unique.get(key)
        if node is None:
            node = self._unique[key] = len(self.nodes)
            self.nodes.append(key)
        return node

    def var(self, name: str) -> int:
        return self._mk(self.level[name], 0, 1)

    def ite(self, f: int, g: int, h: int) -> int:
        """If ``f`` then ``g`` else ``h``.  Shannon expansion on the top
        variable, with an explicit stack: it goes one variable deeper per
        step, and a tree may have thousands of variables."""
        todo: list[tuple[int, int, int] | tuple[tuple[int, int, int], int]] = [(f, g, h)]
        done: list[int] = []
        while todo:
            step = todo.pop()
            if len(step) == 2:  # both cofactors are done: make the node
                key, top = step  # type: ignore[misc]
                hi, lo = done.pop(), done.pop()
                out = self._ite[key] = self._mk(top, lo, hi)
                done.append(out)
                continue
            f, g, h = step  # type: ignore[misc]
            known = self._ite_known(f, g, h)
            if known is not None:
                done.append(known)
                continue
            top = min(self.nodes[f][0], self.nodes[g][0], self.nodes[h][0])
            todo.append(((f, g, h), top))
            todo.append(tuple(self._cofactor(x, top, True) for x in (f, g, h)))  # type: ignore[arg-type]
            todo.append(tuple(self._cofactor(x, top, False) for x in (f, g, h)))  # type: ignore[arg-type]
        return done[0]

    def _ite_known(self, f: int, g: int, h: int) -> int | None:
        if f == 1:
            return g
        if f == 0:
            return h
        if g == h:
            return g
        if g == 1 and h == 0:
            return f
        return self._ite.get((f, g, h))

    def _cofactor(self, f: int, level: int, value: bool) -> int:
        lvl, lo, hi = self.nodes[f]
        if lvl != level:
            return f
        return hi if value else lo

    def not_(self, f: int) -> int:
        return self.ite(f, 0, 1)

    def atleast(self, k: int, fs: Sequence[int]) -> int:
        return _band(k, len(fs), 1, 0, lambda i, with_i, without_i: self.ite(fs[i], with_i, without_i))

    def build(self, node: ir.FtNode | _Const) -> int:
        memo: dict[int, int] = {}

        def go(n: ir.FtNode | _Const) -> int:
            if isinstance(n, _Const):
                return 1 if n.value else 0
            if id(n) in memo:
                return memo[id(n)]
            if isinstance(n, ir.FtEvent):
                out = self.var(n.name)
            elif n.op == "not":
                out = self.not_(go(n.items[0]))
            else:
                k = {"and": len(n.items), "or": 1}.get(n.op, n.k)
                out = self.atleast(k, [go(i) for i in n.items])
            memo[id(n)] = out
            return out

        return go(node)

    def probability(self, f: int, p: Mapping[str, float]) -> float:
        """P(f) with independent variables, P(v) = p[v] (Shannon expansion)."""
        probs = [p[v] for v in self.order]
        memo: dict[int, float] = {0: 0.0, 1: 1.0}
        todo = [f]  # a loop: a path through the diagram is as long as there are variables
        while todo:
            n = todo[-1]
            if n in memo:  # a terminal, or a node reached twice
                todo.pop()
                continue
            lvl, lo, hi = self.nodes[n]
            missing = [c for c in (lo, hi) if c not in memo]
            if missing:
                todo += missing
                continue
            todo.pop()
            memo[n] = probs[lvl] * memo[hi] + (1.0 - probs[lvl]) * memo[lo]
        return memo[f]


def rare_event(cut_sets: Iterable[CutSet], p: Mapping[str, float]) -> float:
    """The rare-event approximation: the sum of the cut sets' probabilities, capped at 1."""
    total = sum(math.prod(p[name] if pos else 1.0 - p[name] for name, pos in cs) for cs in cut_sets)
    return min(1.0, total)


def kleene(node: ir.FtNode | _Const, state: Mapping[str, int]) -> int:
    """Three-valued value of ``node`` (FALSE, TRUE, UNKNOWN) given each event's state."""
    if isinstance(node, _Const):
        return TRUE if node.value else FALSE
    if isinstance(node, ir.FtEvent):
        return state[node.name]
    values = [kleene(i, state) for i in node.items]
    if node.op == "not":
        return {TRUE: FALSE, FALSE: TRUE, UNKNOWN: UNKNOWN}[values[0]]
    k = {"and": len(values), "or": 1}.get(node.op, node.k)
    trues = values.count(TRUE)
    unknowns = values.count(UNKNOWN)
    if trues >= k:
        return TRUE
    if trues + unknowns < k:
        return FALSE
    return UNKNOWN


# ---- the compiled tree -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Importance:
    event: str
    rule: str  # "" for a house event
    prior: float
    birnbaum: float
    fussell_vesely: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one evidence pattern says about a tree."""

    state: int  # TRUE (fired), UNKNOWN or FALSE
    confidence: float
    cut_sets: tuple[tuple[str, ...], ...]  # satisfied (fired) or still possible (unknown)
    events: tuple[str, ...]  # basic events of those cut sets that hold (they blame spans)
    unknown: tuple[str, ...]  # basic events whose evidence is unknown


@dataclass
class TreePlan:
    """A checked tree plus everything computed about it at compile time."""

    tree: ir.CheckedTree
    variables: list[str]  # basic and non-constant house events, in first-seen order
    cause: ir.FtNode | _Const  # constant house events substituted
    cut_sets: list[CutSet]
    truncated: bool
    _bdd: Bdd | None = None
    _root: int = 0
    _memo: dict[bytes, Verdict] = field(default_factory=dict)

    @staticmethod
    def of(tree: ir.CheckedTree) -> TreePlan:
        constants = {h.name: h.value for h in tree.houses if h.value is not None}
        cause = substitute(tree.cause, constants)
        variables = leaves(cause) if not isinstance(cause, _Const) else []
        cut_sets, truncated = minimal_cut_sets(cause)
        return TreePlan(tree, variables, cause, cut_sets, truncated)

    @property
    def id(self) -> str:
        return self.tree.meta.id

    @property
    def exact(self) -> bool:
        return len(self.variables) <= EXACT_LIMIT

    @cached_property  # read per outcome on the per-batch path
    def basics(self) -> dict[str, ir.BasicEvent]:
        return {b.name: b for b in self.tree.basics}

    @cached_property
    def houses(self) -> dict[str, ir.HouseEvent]:
        return {h.name: h for h in self.tree.houses}

    def bdd(self) -> tuple[Bdd, int]:
        if self._bdd is None:
            self._bdd = Bdd(self.variables)
            self._root = self._bdd.build(self.cause)
        return self._bdd, self._root

    def probability(self, p: Mapping[str, float]) -> float:
        if self.exact:
            bdd, root = self.bdd()
            return bdd.probability(root, p)
        return rare_event(self.cut_sets, p)

    def priors(self) -> dict[str, float]:
        """Each variable's prior; house events count as on (1) at compile time."""
        basics = self.basics
        return {v: basics[v].prior if v in basics else 1.0 for v in self.variables}

    def top_probability(self) -> float:
        return self.probability(self.priors())

    def importance(self) -> list[Importance]:
        """Birnbaum (P(top | x) - P(top | not x)) and Fussell-Vesely
        ((P(top) - P(top | not x)) / P(top)) of each basic event, from the priors."""
        p = self.priors()
        top = self.probability(p)
        basics = self.basics
        out = []
        for v in self.variables:
            if v not in basics:
                continue
            on, off = self.probability({**p, v: 1.0}), self.probability({**p, v: 0.0})
            fv = (top - off) / top if top > 0 else 0.0
            out.append(Importance(v, basics[v].rule, p[v], on - off, fv))
        return sorted(out, key=lambda i: (-i.fussell_vesely, -i.birnbaum, i.event))

    def cut_set_probability(self, cs: CutSet) -> float:
        p = self.priors()
        return math.prod(p[name] if pos else 1.0 - p[name] for name, pos in cs)

    # -- run time

    def verdict(self, state: Mapping[str, int]) -> Verdict:
        """The tree's verdict for one trace's evidence (memoized by pattern)."""
        key = bytes(state[v] for v in self.variables)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        basics = self.basics
        result = kleene(self.cause, state)
        p = {}
        for v in self.variables:
            s = state[v]
            if v in basics:
                p[v] = basics[v].weight if s == TRUE else basics[v].prior if s == UNKNOWN else 0.0
            else:
                p[v] = 1.0 if s == TRUE else 0.0
        confidence = self.probability(p)
        if result == TRUE:
            chosen = [cs for cs in self.cut_sets if all(_holds(lit, state) == TRUE for lit in cs)]
        else:
            chosen = [cs for cs in self.cut_sets if all(_holds(lit, state) != FALSE for lit in cs)]
        events = tuple(dict.fromkeys(name for cs in chosen for name, pos in cs
                                     if pos and name in basics and state[name] == TRUE))
        unknown = tuple(v for v in self.variables if state[v] == UNKNOWN)
        verdict = Verdict(result, confidence, tuple(cut_set_text(cs) for cs in chosen), events, unknown)
        if len(self._memo) < 4096:
            self._memo[key] = verdict
        return verdict


def _holds(lit: Literal, state: Mapping[str, int]) -> int:
    s = state[lit[0]]
    if lit[1] or s == UNKNOWN:
        return s
    return TRUE if s == FALSE else FALSE


# ---- checks (W010, W011) -----------------------------------------------------------


def never_fires(node: ir.FtNode | _Const) -> bool:
    if isinstance(node, _Const):
        return not node.value
    bdd = Bdd(leaves(node))
    return bdd.build(node) == 0


def matters(original: ir.FtNode, probed: ir.FtNode, constants: Mapping[str, bool]) -> bool:
    """Whether the sub-gate that ``probed`` replaces by ``PROBE`` can change
    the top event.  It never matters when replacing it by false, or by true,
    leaves the top event's Boolean function unchanged: in ``a or (a and b)``
    the gate ``a and b`` can be dropped (absorption)."""
    whole = substitute(original, constants)
    off = substitute(probed, {**constants, PROBE: False})
    on = substitute(probed, {**constants, PROBE: True})
    names = list(dict.fromkeys(n for f in (whole, off, on) if not isinstance(f, _Const) for n in leaves(f)))
    bdd = Bdd(names)
    root = bdd.build(whole)
    return root != bdd.build(off) and root != bdd.build(on)


# ---- run time: a batch ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeOutcome:
    """A tree's verdict on one trace (only trees whose top is not false are reported)."""

    trace_id: bytes
    tree_id: str
    title: str
    layer: str
    severity: str
    fired: bool
    confidence: float
    cut_sets: tuple[tuple[str, ...], ...]  # fired: the satisfied minimal cut sets; else those still possible
    spans: tuple[tuple[bytes, tuple[str, ...], str], ...]  # (span id, its cut set, the rule blaming it)
    unknown: tuple[str, ...] = ()  # basic events whose rule could not be evaluated
    top_spans: tuple[bytes, ...] = ()  # spans showing the top event (the symptom)

    @property
    def score(self) -> float:
        """Ranking weight (``ir.score``), as for a rule finding."""
        return ir.score(self.confidence, self.severity)


@dataclass
class BatchEvidence:
    """Per-trace evidence of one batch, as columns over ``trace_ids``.

    ``rules``: rule id -> one state byte per trace (FALSE/TRUE/UNKNOWN);
    ``conditions``: condition id (house events, top predicates) -> the set of
    trace indexes where it holds; ``blamed``: (trace index, rule or condition
    id) -> blamed span ids."""

    trace_ids: list[bytes]
    rules: dict[str, bytearray]
    conditions: dict[str, set[int]]
    blamed: dict[tuple[int, str], list[bytes]]
    first_spans: dict[str, list[bytes | None]] = field(default_factory=dict)  # condition id -> a span per trace


def condition_id(kind: str, name: str) -> str:
    """The id of a house event's or a top predicate's compiled condition."""
    return f"__{kind}.{name}"


def evaluate_trees(plans: Sequence[TreePlan], ev: BatchEvidence) -> list[TreeOutcome]:
    """Every (trace, tree) whose top event is true or unknown in ``ev``."""
    out: list[TreeOutcome] = []
    for plan in plans:
        t = plan.tree
        if t.top_rule:
            top_key = t.top_rule
            states = ev.rules.get(t.top_rule)
            rows = [i for i, s in enumerate(states) if s == TRUE] if states is not None else []
        else:
            top_key = condition_id("top", t.meta.id)
            rows = sorted(ev.conditions.get(top_key, ()))
        if not rows:
            continue
        basics, houses = plan.basics, plan.houses
        columns: list[list[int]] = []
        for v in plan.variables:
            if v in basics:
                col = ev.rules.get(basics[v].rule)
                columns.append([col[i] for i in rows] if col is not None else [UNKNOWN] * len(rows))
            else:
                holds = ev.conditions.get(condition_id("house", houses[v].name), set())
                columns.append([TRUE if i in holds else FALSE for i in rows])
        patterns = zip(*columns) if columns else ((),) * len(rows)
        seen: dict[tuple[int, ...], Verdict] = {}
        for row, pattern in zip(rows, patterns):
            v = seen.get(pattern)
            if v is None:
                v = seen[pattern] = plan.verdict(dict(zip(plan.variables, pattern)))
            if v.state != FALSE:
                out.append(_outcome(plan, ev, row, v, top_key))
    return out


def _outcome(plan: TreePlan, ev: BatchEvidence, row: int, v: Verdict, top_key: str) -> TreeOutcome:
    t, basics = plan.tree, plan.basics
    spans: dict[bytes, tuple[tuple[str, ...], str]] = {}
    if v.state == TRUE:
        for cs in v.cut_sets:
            for name in cs:
                if name in basics:
                    rule = basics[name].rule
                    for span_id in ev.blamed.get((row, rule), ()):
                        spans.setdefault(span_id, (cs, rule))
    return TreeOutcome(
        ev.trace_ids[row], t.meta.id, t.meta.title, t.meta.layer, t.meta.severity, v.state == TRUE,
        round(v.confidence, 6), v.cut_sets, tuple((s, cs, r) for s, (cs, r) in spans.items()), v.unknown,
        _top_spans(ev, row, top_key),
    )


def _top_spans(ev: BatchEvidence, row: int, top_key: str) -> tuple[bytes, ...]:
    first = ev.first_spans.get(top_key)
    if first is not None:
        return (first[row],) if first[row] is not None else ()
    return tuple(ev.blamed.get((row, top_key), ()))


# ---- `faulttrace check --explain` ---------------------------------------------------------


def explain(plan: TreePlan, location: str = "") -> str:
    """The tree, its minimal cut sets and the importance of its basic events, as text."""
    t = plan.tree
    m = t.meta
    lines = [f"tree {m.id}: {m.title}" + (f"  [{location}]" if location else "")]
    facts = [f"layer {m.layer}" if m.layer else "", f"severity {m.severity}"]
    lines.append("  " + ", ".join(f for f in facts if f))
    if m.description:
        lines.append(f"  {m.description}")
    lines.append(f"top: {t.top_text or ('rule ' + t.top_rule)}")
    lines.append("cause:")
    basics, houses = plan.basics, plan.houses
    lines += _render(t.cause, basics, houses, "  ", "  ")
    exact = f"exact (BDD over {len(plan.variables)} variables)" if plan.exact else \
        f"rare-event approximation ({len(plan.variables)} variables > {EXACT_LIMIT})"
    more = f", truncated at {CUT_SET_LIMIT}" if plan.truncated else ""
    lines.append(f"minimal cut sets: {len(plan.cut_sets)}{more}")
    width = max((len("{" + ", ".join(cut_set_text(cs)) + "}") for cs in plan.cut_sets), default=8)
    lines.append(f"  {'#':>3}  order  {'cut set':<{width}}  P(prior)")
    for i, cs in enumerate(plan.cut_sets, 1):
        text = "{" + ", ".join(cut_set_text(cs)) + "}"
        lines.append(f"  {i:>3}  {len(cs):>5}  {text:<{width}}  {plan.cut_set_probability(cs):.3g}")
    if any(v in houses for v in plan.variables):
        lines.append("  (house events taken as on)")
    lines.append(f"P(top event) from the priors: {plan.top_probability():.4g}, {exact}")
    imp = plan.importance()
    if imp:
        ew = max(len("event"), *(len(i.event) for i in imp))
        rw = max(len("rule"), *(len(i.rule) for i in imp))
        lines.append("importance:")
        lines.append(f"  {'event':<{ew}}  {'rule':<{rw}}  prior    Birnbaum  Fussell-Vesely")
        for i in imp:
            lines.append(f"  {i.event:<{ew}}  {i.rule:<{rw}}  {i.prior:<7.3g}  {i.birnbaum:<8.4f}  {i.fussell_vesely:.4f}")
    return "\n".join(lines)


def _render(node: ir.FtNode, basics: Mapping[str, ir.BasicEvent], houses: Mapping[str, ir.HouseEvent],
            first: str, rest: str) -> list[str]:
    if isinstance(node, ir.FtEvent):
        if node.name in basics:
            b = basics[node.name]
            what = f"rule {b.rule}; " if b.rule != b.name else "rule; "
            return [f"{first}{node.name}  ({what}prior {b.prior:g}, weight {b.weight:g})"]
        h = houses[node.name]
        what = "a trace with a matching span" if h.value is None else str(h.value).lower()
        return [f"{first}{node.name}  (house: {what})"]
    label = f"atleast {node.k} of" if node.op == "atleast" else node.op
    out = [f"{first}{label}" + (f"  = {node.name}" if node.name else "")]
    for i, item in enumerate(node.items):
        last = i == len(node.items) - 1
        out += _render(item, basics, houses, rest + ("└─ " if last else "├─ "), rest + ("   " if last else "│  "))
    return out
