"""The documented limits of the rule compiler (docs/rules.md#limits) and the
measure of nesting they are checked against.

Past a limit an input is refused with a diagnostic instead of costing
unbounded time or memory, or exhausting Python's stack: every later walk of
an expression (checker, compiler, fault-tree analysis) recurses at most as
deep as ``MAX_NESTING``.
"""

from __future__ import annotations

from dsl import ast
from dsl.diagnostics import Diagnostic, SourceSpan

MAX_FILE_BYTES = 4 * 1024 * 1024  # a rule file (E041)
MAX_STRING_CHARS = 65_536  # between a string literal's quotes, escapes as written (E006)
MAX_NESTING = 100  # levels of one expression or gate, macros and events expanded (E005)

NESTING_HINT = ("flatten it: a chain `a or b or c ...` (or `and`) of any length is one level, while each "
                "`not`, unary `-`, arithmetic operator, comparison, call and bracketed sub-expression adds one")


def too_deep(root: ast.Expr | ast.GateExpr, limit: int = MAX_NESTING) -> ast.Expr | ast.GateExpr | None:
    """The first node, in source order, more than ``limit`` levels deep in
    ``root`` (which is level 1), or None.  A loop, not recursion."""
    todo: list[tuple[ast.Expr | ast.GateExpr, int]] = [(root, 1)]
    while todo:
        node, level = todo.pop()
        if level > limit:
            return node
        todo.extend((child, level + 1) for child in reversed(ast.children(node)))
    return None


def nesting_diagnostic(span: SourceSpan, message: str = "nested too deeply", hint: str = NESTING_HINT,
                       label: str = f"level {MAX_NESTING + 1}") -> Diagnostic:
    """E005 at the first character of ``span`` (the construct that goes past
    the limit: a caret, not an underline as long as the rest of the chain)."""
    at = SourceSpan(span.path, span.line, span.col, span.line, span.col + 1, span.start, span.start + 1)
    return Diagnostic("E005", f"{message}: more than {MAX_NESTING} levels", at, (hint,), label)
