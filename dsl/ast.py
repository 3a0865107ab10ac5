"""The syntax tree of a ``*.rules`` file: frozen dataclasses, one per grammar
construct, each carrying the ``SourceSpan`` it came from.

This module is the only home of AST types.  Nodes are plain data: names are
not resolved and types are not known here (that is ``dsl.checker``'s job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from dsl.diagnostics import SourceSpan

# ---- expressions ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """A string, number, boolean or duration literal.

    ``kind`` is ``"string" | "int" | "double" | "bool" | "duration"``; a
    duration's ``value`` is in nanoseconds (int)."""

    kind: str
    value: object
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Expr, ...]
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Name:
    """A bare identifier: a const, a list, or an enum value (``error``, ``server``)."""

    name: str
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Field:
    """``var.field``: a span intrinsic, or a trace intrinsic when var is ``trace``."""

    var: str
    field: str
    span: SourceSpan
    var_span: SourceSpan
    field_span: SourceSpan


@dataclass(frozen=True, slots=True)
class Key:
    key: str
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Attr:
    """``var.attr["k"]``, ``var.resource["k"]`` or ``var.event["e"]["k"]``.

    ``keys`` holds alternatives (``"a" | "b"``: the first one present wins).
    An event reference without keys (``var.event["exception"]``) tests
    whether the span has such an event.  ``annotation`` is an explicit type
    (``:int``, ``:string[]``), empty when absent."""

    var: str
    source: str  # "attr" | "resource" | "event"
    keys: tuple[Key, ...]
    event: str
    annotation: str
    span: SourceSpan
    var_span: SourceSpan
    annotation_span: SourceSpan | None = None


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not" | "-"
    operand: Expr
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Binary:
    """Comparison, membership and arithmetic operators; ``a + b - c`` is
    ``(a + b) - c``, left-nested, as its SQL is."""

    op: str
    left: Expr
    right: Expr
    span: SourceSpan
    op_span: SourceSpan


@dataclass(frozen=True, slots=True)
class Logical:
    """``a and b and c`` or ``a or b or c``: a chain of any length is one
    node (its SQL is one flat ``AND``/``OR``), so its length costs no nesting."""

    op: str  # "and" | "or"
    items: tuple[Expr, ...]
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Order:
    """``a before b`` (a ended before b started) or ``a after b`` (a started
    after b ended): two span variables of the same trace, ordered in time."""

    op: str  # "before" | "after"
    left: str
    right: str
    span: SourceSpan
    left_span: SourceSpan
    right_span: SourceSpan


@dataclass(frozen=True, slots=True)
class Call:
    """A macro call ``name(args)``."""

    name: str
    args: tuple[Expr, ...]
    span: SourceSpan
    name_span: SourceSpan


@dataclass(frozen=True, slots=True)
class IsSet:
    """``exists(expr)``: the value is not nil."""

    operand: Expr
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Binding:
    """``span v`` (any span of the trace) or ``child v of other`` etc."""

    # "span" | "child" | "parent" | "descendant" | "ancestor" | "sibling"
    # | "preceding_sibling" | "following_sibling" | "event" | "link"
    relation: str
    var: str
    other: str
    span: SourceSpan
    var_span: SourceSpan
    other_span: SourceSpan | None = None


@dataclass(frozen=True, slots=True)
class Quantifier:
    """``exists(binding where p)``, ``count(binding where p)`` and
    ``min|max|avg|sum(value for binding where p)``."""

    func: str  # "exists" | "count" | "min" | "max" | "avg" | "sum"
    binding: Binding
    where: Expr | None
    value: Expr | None
    span: SourceSpan
    func_span: SourceSpan
    by: Expr | None = None  # `by k`: per group of equal `k` (count and aggregates)


Expr = Union[Literal, ListLit, Name, Field, Attr, Unary, Binary, Logical, Order, Call, IsSet, Quantifier]


# ---- rules and definitions --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Meta:
    """One metadata statement, e.g. ``layer code`` or ``confidence 0.8``."""

    key: str
    value: Expr
    span: SourceSpan
    key_span: SourceSpan


@dataclass(frozen=True, slots=True)
class Match:
    bindings: tuple[Binding, ...]
    where: Expr | None
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class TemplatePart:
    """A ``{expr}`` hole of a message template (text parts are plain str)."""

    expr: Expr
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Message:
    parts: tuple[str | TemplatePart, ...]
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Blame:
    var: str
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Explains:
    """``explains f, g``: span variables the rule's finding explains (symptoms
    of the blamed span), each with its own position."""

    vars: tuple[Name, ...]
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    meta: tuple[Meta, ...]
    matches: tuple[Match, ...]
    blames: tuple[Blame, ...]
    messages: tuple[Message, ...]
    span: SourceSpan
    id_span: SourceSpan
    explains: tuple[Explains, ...] = ()


@dataclass(frozen=True, slots=True)
class MacroDef:
    name: str
    params: tuple[Name, ...]
    body: Expr
    span: SourceSpan
    name_span: SourceSpan


@dataclass(frozen=True, slots=True)
class ListDef:
    name: str
    value: ListLit
    span: SourceSpan
    name_span: SourceSpan


@dataclass(frozen=True, slots=True)
class ConstDef:
    name: str
    value: Expr
    span: SourceSpan
    name_span: SourceSpan


# ---- fault trees ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateRef:
    """A name in a gate: an event (intermediate, basic, house) or, dotted, a rule id."""

    name: str
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Gate:
    """``a and b``, ``a or b``, ``not a``, ``atleast k of {a, b, c}``."""

    op: str  # "and" | "or" | "not" | "atleast"
    items: tuple[GateExpr, ...]
    span: SourceSpan
    k: int = 0  # atleast only
    k_span: SourceSpan | None = None


GateExpr = Union[GateRef, Gate]


@dataclass(frozen=True, slots=True)
class Top:
    """A tree's top event: the symptom, as a span predicate or a rule id."""

    rule: str  # "" for a span predicate
    binding: Binding | None
    where: Expr | None
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Cause:
    gate: GateExpr
    span: SourceSpan


@dataclass(frozen=True, slots=True)
class Tree:
    id: str
    meta: tuple[Meta, ...]
    tops: tuple[Top, ...]
    causes: tuple[Cause, ...]
    span: SourceSpan
    id_span: SourceSpan


@dataclass(frozen=True, slots=True)
class EventDef:
    """``event name = gate``: an intermediate event, usable by every tree."""

    name: str
    gate: GateExpr
    span: SourceSpan
    name_span: SourceSpan


@dataclass(frozen=True, slots=True)
class BasicDef:
    """``basic name = rule rule.id [prior p]``."""

    name: str
    rule: str
    prior: float | None
    span: SourceSpan
    name_span: SourceSpan
    rule_span: SourceSpan
    prior_span: SourceSpan | None = None


@dataclass(frozen=True, slots=True)
class HouseDef:
    """``house name = span s where ...`` (true for a trace with such a span) or ``= true|false``."""

    name: str
    binding: Binding | None
    where: Expr | None
    value: bool | None
    span: SourceSpan
    name_span: SourceSpan


Definition = Union[MacroDef, ListDef, ConstDef]
TreeItem = Union[Tree, EventDef, BasicDef, HouseDef]
Item = Union[Rule, MacroDef, ListDef, ConstDef, Tree, EventDef, BasicDef, HouseDef]


@dataclass(frozen=True, slots=True)
class File:
    path: str
    items: tuple[Item, ...]


# ---- walking -------------------------------------------------------------------


def children(node: Expr | GateExpr) -> tuple[Expr | GateExpr, ...]:
    """The sub-expressions of an expression, or the inputs of a gate."""
    match node:
        case Unary() | IsSet():
            return (node.operand,)
        case Binary():
            return (node.left, node.right)
        case Logical() | ListLit() | Gate():
            return node.items
        case Call():
            return node.args
        case Quantifier():
            return tuple(x for x in (node.where, node.value, node.by) if x is not None)
    return ()


def roots(item: Item) -> tuple[Expr | GateExpr, ...]:
    """The outermost expressions and gates of a top-level item."""
    match item:
        case Rule():
            holes = (p.expr for m in item.messages for p in m.parts if isinstance(p, TemplatePart))
            wheres = (m.where for m in item.matches if m.where is not None)
            return (*(m.value for m in item.meta), *wheres, *holes)
        case Tree():
            wheres = (t.where for t in item.tops if t.where is not None)
            return (*(m.value for m in item.meta), *wheres, *(c.gate for c in item.causes))
        case MacroDef():
            return (item.body,)
        case ListDef() | ConstDef():
            return (item.value,)
        case EventDef():
            return (item.gate,)
        case HouseDef():
            return (item.where,) if item.where is not None else ()
    return ()
