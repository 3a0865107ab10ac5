"""Cheap, sound proofs that a rule's condition can never hold (warning W004).

Only the top-level conjunction is examined: comparisons of one operand with
constants (equalities that disagree, empty ranges, negative durations or
counts), comparisons of two constants, an empty ``in []``, and a value both
tested missing and compared.  Anything else is assumed satisfiable.
"""

from __future__ import annotations

from collections.abc import Iterator

from dsl import ir
from dsl.ir import Ty

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}
_NONNEGATIVE = {"duration", "self_time", "depth", "span_count", "error_count", "baseline_p99", "baseline_median"}


def _conjuncts(node: ir.Node) -> Iterator[ir.Node]:
    if isinstance(node, ir.And):
        for item in node.items:
            yield from _conjuncts(item)
    else:
        yield node


def contradiction(where: ir.Node) -> str:
    """Why the conjunction ``where`` is unsatisfiable, or '' if not provable.

    Cheap and sound: only comparisons of one operand with constants, in the
    top-level ``and``, and nil tests, are considered."""
    if isinstance(where, ir.Const) and where.value is False and where.ty is Ty.BOOL:
        return "the condition is always false"
    facts: dict[ir.Node, list[tuple[str, object]]] = {}
    missing: set[ir.Node] = set()
    for c in _conjuncts(where):
        if isinstance(c, ir.Not) and isinstance(c.operand, ir.IsSet):
            missing.add(c.operand.operand)
        elif isinstance(c, ir.InList) and not c.negated and not c.items:
            return "`in []` matches nothing"
        elif isinstance(c, ir.Compare):
            if isinstance(c.right, ir.Const) and not isinstance(c.left, ir.Const):
                facts.setdefault(c.left, []).append((c.op, c.right))
            elif isinstance(c.left, ir.Const) and not isinstance(c.right, ir.Const):
                facts.setdefault(c.right, []).append((_FLIP[c.op], c.left))
            elif isinstance(c.left, ir.Const) and isinstance(c.right, ir.Const):
                if not _holds(c.op, c.left.value, c.right.value):
                    return "a comparison of two constants is false"
    for operand in facts:
        if operand in missing:
            return "a value tested to be missing is also compared (comparisons with nil are false)"
    for operand, cs in facts.items():
        if _nonnegative(operand):
            cs = [*cs, (">=", ir.Const(0, operand.ty))]
        reason = _unsatisfiable(cs)
        if reason:
            return reason
    return ""


def _nonnegative(node: ir.Node) -> bool:
    if isinstance(node, (ir.Intrinsic, ir.TraceIntrinsic)):
        return node.name in _NONNEGATIVE
    return isinstance(node, ir.Quant) and node.func == "count"


def _holds(op: str, a: object, b: object) -> bool:
    try:
        return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]  # type: ignore[operator]
    except TypeError:
        return True


def show(c: ir.Const) -> str:
    """A constant as the rule author would write it."""
    v = c.value
    if c.ty is Ty.STATUS:
        return next(k for k, code in ir.STATUSES.items() if code == v)
    if c.ty is Ty.KIND:
        return next(k for k, code in ir.KINDS.items() if code == v)
    if c.ty is Ty.DURATION and isinstance(v, int):
        for unit, ns in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
            if v and v % ns == 0:
                return f"{v // ns}{unit}"
        return f"{v}ns"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(v).lower() if isinstance(v, bool) else str(v)


def _unsatisfiable(cs: list[tuple[str, ir.Const]]) -> str:
    eqs = {c for op, c in cs if op == "="}
    if len({c.value for c in eqs}) > 1:
        return "one value is required to equal " + " and ".join(sorted(show(c) for c in eqs))
    if eqs:
        v = next(iter(eqs))
        for op, w in cs:
            if not _holds(op, v.value, w.value):
                return f"`= {show(v)}` contradicts `{op} {show(w)}`"
        return ""
    lows = [(c, op) for op, c in cs if op in (">", ">=")]
    highs = [(c, op) for op, c in cs if op in ("<", "<=")]
    for lo, lop in lows:
        for hi, hop in highs:
            try:
                empty = lo.value > hi.value or (lo.value == hi.value and (lop == ">" or hop == "<"))  # type: ignore[operator]
            except TypeError:
                continue
            if empty:
                return f"no value is both `{lop} {show(lo)}` and `{hop} {show(hi)}`"
    return ""
