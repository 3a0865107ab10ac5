"""What a batch without some attributes says about its rules before they run.

A batch's spans often carry none of many attributes the rule set reads (the
library reads dozens, each about one kind of span: databases, gRPC, GenAI
calls).  A rule whose condition cannot hold while those columns are all nil
(``s.attr["db.system"] == "redis"`` on a batch where no span has
``db.system``) finds nothing in that batch, and is not run: planning a
statement is a fixed cost per statement and batch that no data saves.

Conservative: ``can_hold`` is false only when the condition is false for
every assignment of the rule's variables (as the compiler writes it:
comparisons with nil are false); whatever this module cannot tell holds.
"""

from __future__ import annotations

from collections.abc import Collection

from dsl import ir
from dsl.projection import EVENT_LIST, LINK_LIST, column_name

_LISTS = {"event": column_name(EVENT_LIST), "link": column_name(LINK_LIST)}  # the column a relation ranges over


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


def can_hold(node: ir.Node, absent: Collection[str]) -> bool:
    """Whether the condition ``node`` may hold for some assignment when the ``absent`` columns
    are nil; false only when it cannot (a test of a nil value is false, ``and`` with such an
    item, ``or`` of them all, ``exists`` over spans that cannot meet its condition or over the
    events or links of a batch that has none)."""
    match node:
        case ir.Const():
            return node.value is not None and node.value is not False
        case ir.AttrValue():
            return not is_nil(node, absent)
        case ir.Compare(left=ir.Quant(by=by)) if by is not None:
            return True  # a grouped aggregate: some group's count may meet the comparison
        case ir.Compare():
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
            return not is_nil(node.operand, absent)
        case ir.And():
            return all(can_hold(i, absent) for i in node.items)
        case ir.Or():
            return any(can_hold(i, absent) for i in node.items)
        case ir.Quant(func="exists"):
            if _LISTS.get(node.rel.relation) in absent:
                return False
            return node.where is None or can_hold(node.where, absent)
        case ir.AnyOf():
            return not is_nil(node.operand, absent) and can_hold(node.cond, absent)
    return True  # `not`, intrinsics, elements: anything


def can_fire(rule: ir.CheckedRule, absent: Collection[str]) -> bool:
    """Whether ``rule`` may find something in a batch whose ``absent`` columns are all nil."""
    if any(_LISTS.get(b.relation) in absent for b in rule.bindings[1:]):
        return False  # a variable ranges over the events (links) of spans that have none
    return rule.where is None or can_hold(rule.where, absent)
