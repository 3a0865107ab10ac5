"""What a batch without some attributes, or without errors, says about its rules before they run.

A batch's spans often carry none of many attributes the rule set reads (the
library reads dozens, each about one kind of span: databases, gRPC, GenAI
calls), and a batch of healthy traffic has no span with an error status,
which most rules ask for.  A rule whose condition cannot hold then
(``s.attr["db.system"] == "redis"`` on a batch where no span has
``db.system``, ``s.status = error`` on one without errors) finds nothing in
that batch, and is not run: planning a statement is a fixed cost per
statement and batch that no data saves.

Conservative: ``can_hold`` is false only when the condition is false for
every assignment of the rule's variables (as the compiler writes it:
comparisons with nil are false); whatever this module cannot tell holds.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from dsl import ir
from dsl.projection import EVENT_LIST, LINK_LIST, column_name

_LISTS = {"event": column_name(EVENT_LIST), "link": column_name(LINK_LIST)}  # the column a relation ranges over
ERROR = ir.STATUSES["error"]  # the status code of an error (``s.status = error``)


@dataclass(frozen=True, slots=True)
class Absent:
    """What no span of a batch has: a value in the attribute ``columns``, an error status (``errors`` false)."""

    columns: frozenset[str] = frozenset()
    errors: bool = True


def is_nil(node: ir.Node, absent: Collection[str]) -> bool:
    """Whether ``node``'s value is nil on every span when the ``absent`` columns are (nil in,
    nil out: arithmetic, negation, functions of their first argument, ``first`` of nils)."""
    match node:
        case ir.Const():
            return node.value is None
        case ir.AttrValue():
            return all(column_name(r) in absent for r in node.refs)  # the first of the refs that is set
        case ir.Arith():
            return is_nil(node.left, absent) or is_nil(node.right, absent)
        case ir.Negate():
            return is_nil(node.operand, absent)
        case ir.Call():
            return is_nil(node.args[0], absent)
        case ir.First():
            return all(is_nil(i, absent) for i in node.items)
    return False


def can_hold(node: ir.Node, batch: Absent) -> bool:
    """Whether the condition ``node`` may hold for some assignment in a batch without what
    ``batch`` says; false only when it cannot (a test of a nil value is false, and so is a span's
    status being error in a batch without errors; ``and`` with such an item, ``or`` of them all,
    ``exists`` over spans that cannot meet its condition or over the events or links of a batch
    that has none)."""
    absent = batch.columns
    match node:
        case ir.Const():
            return node.value is not None and node.value is not False
        case ir.AttrValue():
            return not is_nil(node, absent)
        case ir.Compare(left=ir.Quant(by=by)) if by is not None:
            return True  # a grouped aggregate: some group's count may meet the comparison
        case ir.Compare():
            if not batch.errors and node.op == "=" and _is_error_test(node.left, node.right):
                return False
            return not (is_nil(node.left, absent) or is_nil(node.right, absent))
        case ir.Regex() | ir.IsSet():
            return not is_nil(node.operand, absent)
        case ir.StrTest():
            return not (is_nil(node.operand, absent) or is_nil(node.arg, absent))
        case ir.ArrayHas():
            return not (is_nil(node.operand, absent) or is_nil(node.element, absent))
        case ir.InList():
            if not node.items:
                return node.negated
            if not batch.errors and not node.negated and all(_is_error_test(node.operand, i) for i in node.items):
                return False
            return not is_nil(node.operand, absent)
        case ir.And():
            return all(can_hold(i, batch) for i in node.items)
        case ir.Or():
            return any(can_hold(i, batch) for i in node.items)
        case ir.Quant(func="exists"):
            if _LISTS.get(node.rel.relation) in absent:
                return False
            return node.where is None or can_hold(node.where, batch)
        case ir.AnyOf():
            return not is_nil(node.operand, absent) and can_hold(node.cond, batch)
    return True  # `not`, intrinsics, elements: anything


def _is_error_test(a: ir.Node, b: ir.Node) -> bool:
    """Whether ``a = b`` compares a span's status with error (either way round)."""
    def status(n: ir.Node) -> bool:
        return isinstance(n, ir.Intrinsic) and n.name == "status"

    def error(n: ir.Node) -> bool:
        return isinstance(n, ir.Const) and n.ty is ir.Ty.STATUS and n.value == ERROR

    return (status(a) and error(b)) or (status(b) and error(a))


def can_fire(rule: ir.CheckedRule, batch: Absent) -> bool:
    """Whether ``rule`` may find something in a batch without what ``batch`` says."""
    if any(_LISTS.get(b.relation) in batch.columns for b in rule.bindings[1:]):
        return False  # a variable ranges over the events (links) of spans that have none
    return rule.where is None or can_hold(rule.where, batch)
