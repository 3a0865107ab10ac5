"""The checked, typed form of a rule that the compiler turns into SQL.

The checker lowers the AST into these nodes after resolving every name
(macros expanded, consts and lists inlined, enum values turned into their
OTLP codes) and typing every expression, so the compiler never re-derives a
type and never sees an unresolved name.  Nodes are frozen and hashable: the
checker compares them structurally when it looks for contradictions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

from dsl.diagnostics import SourceSpan
from dsl.projection import AttrRef


class Ty(enum.StrEnum):
    """Value types of the language."""

    STRING = "string"
    INT = "int"
    DOUBLE = "double"
    BOOL = "bool"
    DURATION = "duration"
    TIME = "time"
    KIND = "kind"
    STATUS = "status"
    STRING_ARRAY = "string[]"
    INT_ARRAY = "int[]"
    DOUBLE_ARRAY = "double[]"
    LIST = "list"
    ERROR = "<error>"  # an ill-typed expression; suppresses follow-on errors

    @property
    def numeric(self) -> bool:
        return self in (Ty.INT, Ty.DOUBLE)

    @property
    def is_array(self) -> bool:
        return self in (Ty.STRING_ARRAY, Ty.INT_ARRAY, Ty.DOUBLE_ARRAY)

    @property
    def element(self) -> Ty:
        return {Ty.STRING_ARRAY: Ty.STRING, Ty.INT_ARRAY: Ty.INT, Ty.DOUBLE_ARRAY: Ty.DOUBLE}[self]


# OTLP enum codes (see dsl.projection.SPAN_COLUMNS)
KINDS = {"unspecified": 0, "internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
STATUSES = {"unset": 0, "ok": 1, "error": 2}

# span intrinsics: name -> type (the compiler maps each to SQL)
SPAN_INTRINSICS: dict[str, Ty] = {
    "name": Ty.STRING,
    "service": Ty.STRING,
    "kind": Ty.KIND,
    "status": Ty.STATUS,
    "status_message": Ty.STRING,
    "duration": Ty.DURATION,
    "self_time": Ty.DURATION,
    "start": Ty.TIME,
    "end": Ty.TIME,
    "is_root": Ty.BOOL,
    "depth": Ty.INT,
    # the operation's learned baseline (``dsl.compiler.BASELINE_TABLE``); nil without one
    "baseline_p99": Ty.DURATION,
    "baseline_median": Ty.DURATION,
    "zscore": Ty.DOUBLE,
}
# fields of an event variable (`event e of s`), read as `e.<name>`; in the IR
# they are ``Intrinsic(var, "event_<name>")``
EVENT_INTRINSICS: dict[str, Ty] = {
    "name": Ty.STRING,
    "time": Ty.TIME,
}

# trace intrinsics, read as `trace.<name>`
TRACE_INTRINSICS: dict[str, Ty] = {
    "duration": Ty.DURATION,
    "root_service": Ty.STRING,
    "root_name": Ty.STRING,
    "span_count": Ty.INT,
    "error_count": Ty.INT,
}

LAYERS = ("code", "data", "infrastructure", "semantic", "config")
SEVERITIES = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}


def score(confidence: float, severity: str) -> float:
    """The ranking weight of a rule finding or a tree verdict: confidence x
    severity (1 info .. 5 critical).

    Rounded so that products equal in decimal tie (0.6 x 3 is 1.7999999999999998
    in binary floating point, 0.9 x 2 is 1.8) and the tie goes to the deeper span."""
    return round(confidence * SEVERITIES[severity], 9)


@dataclass(frozen=True, slots=True)
class Const:
    value: object  # str | int | float | bool ; durations in ns, enums as codes
    ty: Ty


@dataclass(frozen=True, slots=True)
class Intrinsic:
    var: str
    name: str
    ty: Ty


@dataclass(frozen=True, slots=True)
class TraceIntrinsic:
    var: str  # any variable of the rule: all of them are in the same trace
    name: str
    ty: Ty


@dataclass(frozen=True, slots=True)
class AttrValue:
    """An attribute read; several refs = the first non-nil one (semconv aliases)."""

    var: str
    refs: tuple[AttrRef, ...]
    ty: Ty


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # = != < <= > >=
    left: Node
    right: Node
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class Regex:
    operand: Node
    pattern: str
    negated: bool
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class StrTest:
    op: str  # contains | starts_with | ends_with
    operand: Node
    arg: Node
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class ArrayHas:
    operand: Node
    element: Node
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class InList:
    operand: Node
    items: tuple[Const, ...]
    negated: bool
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class Arith:
    op: str  # + - * / %
    left: Node
    right: Node
    ty: Ty


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Node
    ty: Ty


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class IsSet:
    operand: Node
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class First:
    """``first(a, b, ...)``: the first value that is not nil."""

    items: tuple[Node, ...]
    ty: Ty


@dataclass(frozen=True, slots=True)
class Call:
    """A value function: ``len lower upper substr split json`` (``dsl.checker.FUNCTIONS``)."""

    func: str
    args: tuple[Node, ...]
    ty: Ty


@dataclass(frozen=True, slots=True)
class Element:
    """The element of the array ``AnyOf`` tests, one at a time."""

    ty: Ty


@dataclass(frozen=True, slots=True)
class AnyOf:
    """``any(arr =~ "re")``: some element of ``operand`` (an array) satisfies
    ``cond``, a condition on ``Element``."""

    operand: Node
    cond: Node
    ty: Ty = Ty.BOOL


@dataclass(frozen=True, slots=True)
class Rel:
    """A variable and how it relates to an earlier one (``span`` = any span of
    the trace of ``other``, or of the batch for a rule's first variable;
    ``preceding_sibling``/``following_sibling``: a sibling that ended before
    ``other`` started / started after it ended; ``event``: an event of
    ``other``, not a span; ``link``: a span of the batch ``other`` links to)."""

    var: str
    relation: str
    other: str


@dataclass(frozen=True, slots=True)
class Quant:
    func: str  # exists | count | min | max | avg | sum
    rel: Rel
    where: Node | None
    value: Node | None
    ty: Ty
    by: Node | None = None  # grouped: only as the left side of a comparison, which then holds for some group


Node = Union[Const, Intrinsic, TraceIntrinsic, AttrValue, Compare, Regex, StrTest, ArrayHas, InList, Arith, Negate, And, Or, Not, IsSet, Quant, First, Call, Element, AnyOf]


@dataclass(frozen=True, slots=True)
class RuleMeta:
    id: str
    title: str
    layer: str
    severity: str
    confidence: float
    tags: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    description: str = ""

    @property
    def severity_weight(self) -> int:
        return SEVERITIES[self.severity]


@dataclass(frozen=True, slots=True)
class Explained:
    """A span a rule's finding explains (``explains f``): a variable of the
    rule's ``match`` (``path`` empty), or one bound by a quantifier: ``path``
    holds the quantifiers from the rule's condition down to the one binding
    ``var`` (outermost first), each found in its parent's ``where``.  The
    spans explained are every assignment of ``var`` that satisfies them."""

    var: str
    path: tuple[Quant, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckedRule:
    meta: RuleMeta
    bindings: tuple[Rel, ...]
    where: Node | None
    blame: str
    message: tuple[str | Node, ...]
    span: SourceSpan
    explains: tuple[Explained, ...] = ()


def children(node: Node) -> tuple[Node, ...]:
    """Direct sub-nodes (used by walkers in the checker and compiler)."""
    match node:
        case Compare(_, l, r) | Arith(_, l, r) | StrTest(_, l, r) | ArrayHas(l, r):
            return (l, r)
        case Regex(o) | Negate(o) | Not(o) | IsSet(o):
            return (o,)
        case InList(o, items):
            return (o, *items)
        case And(items) | Or(items) | First(items) | Call(_, items):
            return items
        case AnyOf(o, c):
            return (o, c)
        case Quant(_, _, where, value, _, by):
            return tuple(n for n in (where, value, by) if n is not None)
    return ()


def walk(node: Node):
    """Pre-order traversal."""
    yield node
    for child in children(node):
        yield from walk(child)


def height(node: Node) -> int:
    """Levels of ``node``: 1 for a leaf, one more per level of nesting (a loop, not recursion)."""
    best = 0
    todo = [(node, 1)]
    while todo:
        n, level = todo.pop()
        best = max(best, level)
        todo.extend((c, level + 1) for c in children(n))
    return best


# ---- fault trees ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FtEvent:
    """A leaf of a fault tree: a basic event (a rule) or a house event (a context)."""

    name: str


@dataclass(frozen=True, slots=True)
class FtGate:
    """``and``/``or``/``not``/``atleast k of``; ``name`` is the intermediate
    event it defines (empty for an anonymous gate)."""

    op: str
    items: tuple[FtNode, ...]
    k: int = 0
    name: str = ""


FtNode = Union[FtEvent, FtGate]


@dataclass(frozen=True, slots=True)
class BasicEvent:
    """A basic event: ``rule`` fired in the trace.  ``weight`` is the rule's
    confidence: the probability that the event occurred given that the rule fired."""

    name: str
    rule: str
    prior: float
    weight: float


@dataclass(frozen=True, slots=True)
class HouseEvent:
    """A context switch: constant (``value``) or true for a trace with a span
    matching ``condition``."""

    name: str
    value: bool | None
    condition: CheckedRule | None = None


@dataclass(frozen=True, slots=True)
class TreeMeta:
    id: str
    title: str
    layer: str = ""
    severity: str = "high"
    description: str = ""
    tags: tuple[str, ...] = ()
    references: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckedTree:
    """A checked fault tree: the top event (a rule id, or a span condition)
    and its cause, with intermediate events expanded (shared, not copied)."""

    meta: TreeMeta
    top_rule: str
    top_condition: CheckedRule | None
    cause: FtNode
    basics: tuple[BasicEvent, ...]
    houses: tuple[HouseEvent, ...]
    span: SourceSpan
    top_text: str = ""
