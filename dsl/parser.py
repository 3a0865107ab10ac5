"""Text -> ``dsl.ast.File``, with syntax problems as ``Diagnostic`` values.

Owns the (lazily built, cached) Lark LALR parser, the structural transformer
from parse tree to AST, message-template splitting, and the translation of
Lark's exceptions into diagnostics with "expected ..." hints.  A syntax error
does not stop the file: the broken top-level item is blanked out and the rest
is parsed again, so one run reports every broken item.  A file is parsed in
pieces of whole items (``_pieces``), so that parsing again after an error
costs one piece, not the whole file.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import lark
from lark import TextSlice, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.grammar import Rule
from lark.lexer import LexerThread
from lark.parsers.lalr_analysis import Reduce, Shift
from lark.parsers.lalr_parser_state import ParseConf, ParserState

from dsl import ast
from dsl.diagnostics import Diagnostic, LineIndex, SourceSpan, did_you_mean
from dsl.lexer import FastLexer
from dsl.limits import MAX_STRING_CHARS, nesting_diagnostic, too_deep

_DURATION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
# a new top-level item starts at the beginning of a line with one of these
_ITEM_START = re.compile(r"^[ \t]*(rule|macro|list|const|tree|event|basic|house)\b", re.M)
_MAX_RECOVERIES = 100
_PIECE_CHARS = 16_384  # a file is parsed in pieces of whole items of at least this size (the last may be shorter)
_LOOK_BACK = 8  # words before a syntax error searched for a misspelt keyword
_INT64_MAX = 2**63 - 1  # integers and durations (in ns) are BIGINT in SQL


@functools.cache
def _lark() -> lark.Lark:
    """The LALR parser, built on first use: from the grammar's analysis saved
    in the user's cache directory (~20 ms), or from the grammar (~150 ms)."""
    grammar = resources.files("dsl").joinpath("grammar.lark").read_text(encoding="utf-8")
    return lark.Lark(
        grammar,
        parser="lalr",
        start=["start", "expr"],
        propagate_positions=True,
        maybe_placeholders=True,
        cache=_cache_file() or False,
    )


@functools.cache
def _fast_lexer() -> FastLexer:
    """The lexer ``parse`` runs: Lark's contextual lexer's tokens, faster."""
    frontend = _lark().parser
    return FastLexer(frontend.lexer, frontend.parser.parser.parse_table.states)


def _cache_file() -> str | None:
    """Where Lark keeps the grammar's analysis (it stores the grammar's hash
    with it and analyses again if they differ, or if it cannot read the
    file), in a directory only this user can write: the file is a pickle."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "faulttrace")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if (hasattr(os, "getuid") and os.stat(folder).st_uid != os.getuid()) or not os.access(folder, os.W_OK):
            return None
    except OSError:
        return None
    return os.path.join(folder, f"grammar-lark{lark.__version__}.pickle")


def parse(text: str, path: str = "<string>") -> tuple[ast.File, list[Diagnostic]]:
    """Parse one file; returns its AST (items that parsed) and all problems.

    The same as parsing the whole text, blanking the item around each syntax
    error and parsing the whole text again (up to ``_MAX_RECOVERIES`` times),
    but piece by piece: the text before a piece that parsed is a sequence of
    whole items, which no later blanking changes, and as LALR parsing is
    deterministic a piece fails where the whole text would, except at its
    end.  A piece that ends inside an item (an item keyword starting a line
    of an item: ``event e of s`` continuing a binding) fails at its end, and
    is parsed again with the next piece."""
    diags: list[Diagnostic] = []
    lines = LineIndex(text)  # blanking keeps every newline: one index serves every attempt
    builder = _AstBuilder(path, text, lines)
    parser = _DirectParser(builder)
    lexer = _fast_lexer()
    items: list[Any] = []
    work = text
    bounds = _pieces(text)
    first, last, failures = 0, 1, 0  # parsing bounds[first]:bounds[last]
    kept = 0  # builder.diagnostics of the pieces parsed
    while last < len(bounds):
        del builder.diagnostics[kept:]  # of an attempt that failed: the items they were about are not kept
        try:
            top = parser.parse(LexerThread.from_text(lexer, TextSlice(work, bounds[first], bounds[last])))
        except UnexpectedInput as err:
            if last + 1 < len(bounds) and _at_end(err):
                last += 1
                continue
            diags.append(_syntax_diagnostic(err, work, path, lines))
            failures += 1
            blanked = _blank_item_at(work, err.pos_in_stream or 0)
            if blanked == work or failures == _MAX_RECOVERIES:  # give up on the file
                return ast.File(path, ()), diags
            work = blanked
            continue
        items += top.value
        kept = len(builder.diagnostics)
        first, last = last, last + 1
    diags += builder.diagnostics
    return ast.File(path, tuple(_within_nesting(items, diags))), diags


def _pieces(text: str) -> list[int]:
    """Where the pieces of ``text`` start, and its end: every piece but the
    first starts at an item keyword at the start of a line."""
    bounds = [0]
    for m in _ITEM_START.finditer(text):
        if m.start() - bounds[-1] >= _PIECE_CHARS:
            bounds.append(m.start())
    return [*bounds, len(text)]


def _at_end(err: UnexpectedInput) -> bool:
    """Whether ``err`` is the parser meeting the end of its input."""
    return isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END")


def parse_expr(text: str, path: str = "<string>") -> tuple[ast.Expr | None, list[Diagnostic]]:
    """Parse a lone expression (tests and tools use this)."""
    try:
        tree = _lark().parse(text, start="expr")
    except UnexpectedInput as err:
        return None, [_syntax_diagnostic(err, text, path)]
    builder = _AstBuilder(path, text, LineIndex(text))
    expr = builder.build(tree)
    kept = _within_nesting([expr], builder.diagnostics, lambda e: (e,))
    return (kept[0] if kept else None), builder.diagnostics


def _within_nesting(items: list[Any], diags: list[Diagnostic],
                    roots: Callable[[Any], Iterable[Any]] = ast.roots) -> list[Any]:
    """``items`` without those nesting past ``MAX_NESTING`` (an E005 each, in
    ``diags``): nothing after the parser has to walk a deeper expression."""
    kept = []
    for item in items:
        deep = next((n for n in map(too_deep, roots(item)) if n is not None), None)
        if deep is None:
            kept.append(item)
        else:
            what = "gate" if isinstance(deep, (ast.Gate, ast.GateRef)) else "expression"
            diags.append(nesting_diagnostic(deep.span, f"{what} nested too deeply"))
    return kept


def _blank_item_at(text: str, pos: int) -> str:
    """``text`` with the top-level item around ``pos`` replaced by spaces
    (newlines kept, so every later position is unchanged)."""
    starts = [m.start() for m in _ITEM_START.finditer(text)]
    begin = max((s for s in starts if s <= pos), default=0)
    end = min((s for s in starts if s > pos), default=len(text))
    if begin == end:
        return text
    chunk = re.sub(r"[^\n]", " ", text[begin:end])
    return text[:begin] + chunk + text[end:]


# ---- parsing straight to the AST ------------------------------------------------
#
# A file is parsed without a parse tree: Lark's LALR parser calls, at each
# reduction, a function of ours instead of its tree builder, which calls the
# builder method named after the rule (the methods the parse-tree walk of
# ``_AstBuilder.build`` calls, for message holes and ``parse_expr``).  Each
# function does what Lark's would (drop anonymous tokens, splice `_rule`s and
# `?rule`s, add None for absent `[...]` parts) and gives the node the
# positions ``propagate_positions`` would, so both ways build the same AST;
# it skips a parse tree, its positions' bookkeeping and a second walk.  It
# reaches into Lark's LALR parser (its parse table, parser state and lexers,
# stable through lark 1.x) and runs its loop (``_DirectParser``) and its
# contextual lexer (``dsl.lexer``) in fewer Python steps; constraints.txt pins
# the version tested, and test_parser compares both ways (the other is Lark's
# own lexer and parser) on every rule file of the repository.


class _Node:
    """A reduced rule: the builder method's ``value``, or an inlined rule's
    ``children``, and where it lies, named as ``lark.tree.Meta`` (the
    methods take it as their ``meta``): ``line`` None when it is empty."""

    __slots__ = ("value", "children", "line", "column", "start_pos", "end_line", "end_column", "end_pos")


class _DirectParser:
    """Lark's LALR parser (``lalr_parser._Parser``) for ``_lark()``'s grammar
    from its ``start`` rule, calling ``builder``'s methods.  Its loop is Lark's
    ``ParserState.feed_token`` inlined: that method sets up its locals again
    at every token.  A token the state has no action for goes to Lark's
    ``feed_token``, which raises the error Lark's parser would."""

    def __init__(self, builder: _AstBuilder) -> None:
        self.table, reductions = _direct_table()
        self.callbacks = {red: _reducer(red.rule, builder) for red in reductions}

    def parse(self, lexer: LexerThread) -> Any:
        table, callbacks = self.table, self.callbacks
        state = ParserState(ParseConf(table, callbacks, "start"), lexer)
        states, stack, values = table.states, state.state_stack, state.value_stack
        token = None
        for token in lexer.lex(state):
            kind = token.type
            while True:
                step = states[stack[-1]].get(kind)
                if step is None:
                    state.feed_token(token)  # raises
                action, arg = step
                if action is Shift:
                    stack.append(arg)
                    values.append(token)
                    break
                reduce = callbacks[arg]
                if reduce is _first:  # `?a: b`, most reductions: b stays, in the state after an a
                    stack[-1] = states[stack[-2]][arg.name][1]
                    continue
                size = arg.size
                if size:
                    children = values[-size:]
                    del stack[-size:]
                    del values[-size:]
                else:
                    children = []
                values.append(reduce(children))
                stack.append(states[stack[-1]][arg.name][1])
        end = Token.new_borrow_pos("$END", "", token) if token is not None else Token("$END", "", 0, 1, 1)
        return state.feed_token(end, True)


class _Reduction:
    """A rule as the parse table's reduce actions name it, for the direct
    parser: Lark's parser reads its ``expansion`` and ``origin``, and looks
    up its function by it, by identity (a ``lark.grammar.Rule`` is hashed
    and compared field by field in Python, at every reduction)."""

    __slots__ = ("rule", "expansion", "origin", "size", "name")

    def __init__(self, rule: Rule) -> None:
        self.rule, self.expansion, self.origin = rule, rule.expansion, rule.origin
        self.size, self.name = len(rule.expansion), rule.origin.name  # for _DirectParser.parse


@functools.cache
def _direct_table() -> tuple[Any, tuple[_Reduction, ...]]:
    """``_lark()``'s parse table with its reduce actions naming ``_Reduction``s, and those."""
    table = copy.copy(_lark().parser.parser.parser.parse_table)
    reductions: dict[Rule, _Reduction] = {}
    table.states = {
        state: {sym: (action, reductions.setdefault(arg, _Reduction(arg)) if action is Reduce else arg)
                for sym, (action, arg) in actions.items()}
        for state, actions in table.states.items()
    }
    return table, tuple(reductions.values())


def _kept(rule: Rule) -> tuple[list[tuple[int, bool, int]], int]:
    """Which of ``rule``'s children a node keeps, as Lark's ``maybe_create_child_filter``:
    (index, whether it is spliced, Nones before it), and Nones after the last."""
    flags = rule.options.empty_indices
    nones = [len(ones) for ones in "".join(str(int(b)) for b in flags).split("0")] if flags else [0] * (len(rule.expansion) + 1)
    kept, pending = [], 0
    for i, sym in enumerate(rule.expansion):
        pending += nones[i]
        if rule.options.keep_all_tokens or not (sym.is_term and sym.filter_out):
            kept.append((i, not sym.is_term and sym.name.startswith("_"), pending))
            pending = 0
    return kept, pending + nones[len(rule.expansion)]


def _first(children: list[Any]) -> Any:
    return children[0]


def _reducer(rule: Rule, builder: _AstBuilder) -> Callable[[list[Any]], Any]:
    """The function reducing ``rule``'s children (tokens and ``_Node``s) to a ``_Node``."""
    kept, trailing = _kept(rule)
    name = rule.alias or rule.options.template_source or rule.origin.name
    expand1 = bool(rule.options.expand1) and not rule.alias
    if expand1 and kept == [(0, False, 0)] and not trailing and len(rule.expansion) == 1:
        return _first  # `?a: b`: b itself, where it lies unchanged
    # None: an inlined `_rule` (its children go to its parent), or a `?rule` whose one child is kept
    method = None if name.startswith("_") else getattr(builder, name, None)

    def reduce(children: list[Any]) -> Any:
        kids: list[Any] = []
        for i, splice, nones in kept:
            if nones:
                kids += [None] * nones
            child = children[i]
            if splice:
                if kids:
                    kids += child.children
                else:
                    kids = child.children  # reused: a chain of n items costs n steps, not n*n/2
            else:
                kids.append(child.value if type(child) is _Node else child)
        if trailing:
            kids += [None] * trailing
        if expand1 and len(kids) == 1:
            only = next((children[i] for i, splice, _ in kept if not splice), None)
            if type(only) is not _Node:
                return only  # a token keeps its own position, as in Lark
            _place(only, children)  # `(expr)`: the expression, now lying from `(` to `)`
            return only
        node = _Node()
        _place(node, children)
        if method is None:
            node.children = kids
        else:
            node.value = method(node, kids)
        return node

    return reduce


def _place(node: _Node, children: list[Any]) -> None:
    """Set where ``node`` lies: from its first non-empty child to its last."""
    first, last = children[0] if children else None, children[-1] if children else None
    if first is None or first.line is None or last.line is None:  # rare: an empty child, or none
        first = next((c for c in children if c.line is not None), None)
        if first is None:
            node.line = None
            return
        last = next(c for c in reversed(children) if c.line is not None)
    node.line, node.column, node.start_pos = first.line, first.column, first.start_pos
    node.end_line, node.end_column, node.end_pos = last.end_line, last.end_column, last.end_pos


# ---- Lark errors -> diagnostics ---------------------------------------------


def _describe_terminal(name: str) -> str:
    terminals = {t.name: t for t in _lark().terminals}
    readable = {"NAME": "a name", "STRING": "a string", "NUMBER": "a number", "DURATION": "a duration"}
    if name in readable:
        return readable[name]
    term = terminals.get(name)
    if term is not None and term.pattern.type == "str":
        return f"`{term.pattern.value}`"
    return name.lower()


def _expected_hint(expected: set[str], got: str) -> tuple[str, ...]:
    names = sorted({_describe_terminal(e) for e in expected if not e.startswith("$")})
    if not names:
        return ()
    keywords = [n.strip("`") for n in names if n.startswith("`") and n[1:2].isalpha()]
    hints = did_you_mean(got, keywords, cutoff=0.7) if got else ()
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return (*hints, f"expected {'one of: ' if len(names) > 1 else ''}{shown}")


def _syntax_diagnostic(err: UnexpectedInput, text: str, path: str, lines: LineIndex | None = None) -> Diagnostic:
    """``lines`` indexes ``text`` (or a text with the same line breaks)."""
    lines = lines or LineIndex(text)
    pos = err.pos_in_stream if err.pos_in_stream is not None else len(text)
    if isinstance(err, UnexpectedCharacters):
        char = text[pos] if pos < len(text) else ""
        if char in "\"'":
            end = text.find("\n", pos)
            span = lines.span(path, pos, len(text) if end < 0 else end)
            return Diagnostic("E004", "unterminated string", span, ("strings end on the line they start",))
        span = lines.span(path, pos, pos + 1)
        hints = _expected_hint(set(err.allowed or ()), "")
        return Diagnostic("E002", f"unexpected character {char!r}", span, hints)
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        end = len(text.rstrip())
        span = lines.span(path, end, end)
        return Diagnostic("E001", "unexpected end of file", span, _expected_hint(set(err.expected), ""))
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    span = SourceSpan(path, tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)
    hints = _expected_hint(set(err.expected), str(tok))
    if not any(h.startswith("did you mean") for h in hints):
        hints = _misspelt_keyword(text, tok.start_pos) + hints
    return Diagnostic("E001", f"unexpected {_token_text(tok)}", span, hints)


def _misspelt_keyword(text: str, pos: int) -> tuple[str, ...]:
    """A misspelt keyword often parses as a name and the error surfaces a
    token later (``match span e wher e.x``): look back along the line, a few
    words (not all of a generated line's thousands, each a fuzzy match)."""
    keywords = {t.pattern.value for t in _lark().terminals if t.pattern.type == "str" and t.pattern.value.isalpha()}
    line_start = text.rfind("\n", 0, pos) + 1
    for word in reversed(re.findall(r"[A-Za-z_]+", text[line_start:pos])[-_LOOK_BACK:]):
        if word in keywords:
            break
        hint = did_you_mean(word, keywords, cutoff=0.75)
        if hint:
            return (f"{hint[0]} (`{word}` is not a keyword)",)
    return ()


def _token_text(tok: Token) -> str:
    if tok.type == "STRING":
        return "string"
    if tok.type in ("NUMBER", "DURATION"):
        return f"number `{tok}`"
    if tok.type == "NAME":
        return f"name `{tok}`"
    return f"`{tok}`"


# ---- parse tree -> AST --------------------------------------------------------


# where a sub-text parsed on its own (a message template's hole) starts in
# its file: line, column and offset of its first character
Origin = tuple[int, int, int]


def _shift(span: SourceSpan, origin: Origin | None) -> SourceSpan:
    """A span in a sub-text, moved to where the sub-text sits in its file."""
    if origin is None:
        return span
    line, col, pos = origin
    return SourceSpan(span.path, line + span.line - 1, col + span.col - 1 if span.line == 1 else span.col,
                      line + span.end_line - 1, col + span.end_col - 1 if span.end_line == 1 else span.end_col,
                      pos + span.start, pos + span.end)


class _AstBuilder:
    """Structural: one AST node per tree node, by the method named after the
    node's grammar rule (called with the node's position and its children's
    results); never raises.  Lexical problems (bad escapes) are collected in
    ``diagnostics``.  ``text`` is the whole file and ``lines`` its index;
    ``origin`` places a sub-text the parse tree was parsed from (``None``:
    the tree is of the whole file)."""

    def __init__(self, path: str, text: str, lines: LineIndex, origin: Origin | None = None,
                 holes: dict[str, Tree] | None = None) -> None:
        self.path = path
        self.text = text
        self.lines = lines
        self.origin = origin
        self.diagnostics: list[Diagnostic] = []
        # parse trees of the message holes seen so far, by text: a hole is parsed on its own (its
        # positions are relative to it), and a file's messages repeat the same few holes
        self.holes: dict[str, Tree] = {} if holes is None else holes

    def _span(self, line: int, col: int, end_line: int, end_col: int, start: int, end: int) -> SourceSpan:
        span = SourceSpan(self.path, line, col, end_line, end_col, start, end)
        return span if self.origin is None else _shift(span, self.origin)

    def _s(self, meta: object) -> SourceSpan:
        m = meta
        if self.origin is None:  # the common case, spelt out: a file has hundreds of thousands of spans
            return SourceSpan(self.path, m.line, m.column, m.end_line, m.end_column, m.start_pos, m.end_pos)  # type: ignore[attr-defined]
        return self._span(m.line, m.column, m.end_line, m.end_column, m.start_pos, m.end_pos)  # type: ignore[attr-defined]

    def _t(self, tok: Token) -> SourceSpan:
        if self.origin is None:
            return SourceSpan(self.path, tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)  # type: ignore[arg-type]
        return self._span(tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)  # type: ignore[arg-type]

    def _offset(self, pos: int) -> int:
        """The file offset of position ``pos`` of the parsed text."""
        return pos + (self.origin[2] if self.origin else 0)

    def build(self, tree: Tree) -> Any:
        """The AST of ``tree``, children first.  A loop with its own stack,
        not recursion: however deeply the input nests, this step cannot
        exhaust Python's stack (the depth limit is checked on its result);
        and a plain method call per node, which costs a fraction of Lark's
        ``Transformer`` with ``v_args(meta=True)``."""
        todo: list[tuple[bool, Any]] = [(False, tree)]
        values: list[Any] = []
        while todo:
            children_done, node = todo.pop()
            if children_done:
                k = len(node.children)
                children = values[len(values) - k:]
                del values[len(values) - k:]
                values.append(getattr(self, node.data)(node.meta, children))
            elif isinstance(node, Tree):
                todo.append((True, node))
                todo.extend((False, c) for c in reversed(node.children))
            else:
                values.append(node)  # a token, or None for an absent optional part
        return values[0]

    # -- top level
    def start(self, meta, items):
        return list(items)

    def rule(self, meta, children):
        (rid, id_span), *stmts = children
        pick = lambda cls: tuple(s for s in stmts if isinstance(s, cls))  # noqa: E731
        return ast.Rule(rid, pick(ast.Meta), pick(ast.Match), pick(ast.Blame), pick(ast.Message), self._s(meta), id_span,
                        pick(ast.Explains))

    def dotted(self, meta, names):
        return ".".join(names), self._s(meta)

    def meta(self, meta, children):
        key, value = children
        return ast.Meta(str(key), value, self._s(meta), self._t(key))

    def bare_name(self, meta, children):
        return ast.Name(str(children[0]), self._s(meta))

    def match(self, meta, children):
        *bindings, where = children
        return ast.Match(tuple(bindings), where, self._s(meta))

    def blame(self, meta, children):
        return ast.Blame(str(children[0]), self._t(children[0]))

    def explains(self, meta, children):
        return ast.Explains(tuple(ast.Name(str(t), self._t(t)) for t in children), self._s(meta))

    def message(self, meta, children):
        return ast.Message(self._template(children[0]), self._s(meta))

    def macro_def(self, meta, children):
        name, *params, body = children
        params = [p for p in params if p is not None]
        return ast.MacroDef(str(name), tuple(ast.Name(str(p), self._t(p)) for p in params), body, self._s(meta), self._t(name))

    def list_def(self, meta, children):
        name, value = children
        return ast.ListDef(str(name), value, self._s(meta), self._t(name))

    def const_def(self, meta, children):
        name, value = children
        return ast.ConstDef(str(name), value, self._s(meta), self._t(name))

    # -- fault trees
    def tree(self, meta, children):
        (tid, id_span), *stmts = children
        pick = lambda cls: tuple(s for s in stmts if isinstance(s, cls))  # noqa: E731
        return ast.Tree(tid, pick(ast.Meta), pick(ast.Top), pick(ast.Cause), self._s(meta), id_span)

    def top_span(self, meta, children):
        var, where = children
        binding = ast.Binding("span", str(var), "", self._t(var), self._t(var))
        return ast.Top("", binding, where, self._s(meta))

    def top_rule(self, meta, children):
        (rid, _), = children
        return ast.Top(rid, None, None, self._s(meta))

    def cause(self, meta, children):
        return ast.Cause(children[0], self._s(meta))

    def event_def(self, meta, children):
        name, gate = children
        return ast.EventDef(str(name), gate, self._s(meta), self._t(name))

    def basic_def(self, meta, children):
        name, (rid, rid_span), prior = children
        value = float(prior) if prior is not None else None
        return ast.BasicDef(str(name), rid, value, self._s(meta), self._t(name), rid_span,
                            self._t(prior) if prior is not None else None)

    def house_span(self, meta, children):
        name, var, where = children
        binding = ast.Binding("span", str(var), "", self._t(var), self._t(var))
        return ast.HouseDef(str(name), binding, where, None, self._s(meta), self._t(name))

    def house_true(self, meta, children):
        return ast.HouseDef(str(children[0]), None, None, True, self._s(meta), self._t(children[0]))

    def house_false(self, meta, children):
        return ast.HouseDef(str(children[0]), None, None, False, self._s(meta), self._t(children[0]))

    def gate_ref(self, meta, children):
        name, span = children[0]
        return ast.GateRef(name, span)

    def _gate_chain(self, op: str, meta, children):
        return ast.Gate(op, tuple(children), self._s(meta))

    def gate_or(self, meta, children):
        return self._gate_chain("or", meta, children)

    def gate_and(self, meta, children):
        return self._gate_chain("and", meta, children)

    def gate_neg(self, meta, children):
        return ast.Gate("not", (children[0],), self._s(meta))

    def gate_atleast(self, meta, children):
        k, *items = children
        count = float(k)  # `atleast 1e999 of` is out of range (E063), not an overflow
        return ast.Gate("atleast", tuple(items), self._s(meta), int(min(count, _INT64_MAX)), self._t(k))

    # -- bindings
    def span_binding(self, meta, children):
        (var,) = children
        return ast.Binding("span", str(var), "", self._s(meta), self._t(var))

    def rel_binding(self, meta, children):
        rel, var, other = children
        return ast.Binding(rel, str(var), str(other), self._s(meta), self._t(var), self._t(other))

    def relation(self, meta, children):
        return "_".join(str(c) for c in children)  # `following sibling` -> following_sibling

    # -- expressions
    def _binary_chain(self, meta, children):
        """``a op b op c`` (operators interleaved) -> left-nested Binary."""
        left = children[0]
        for op_tok, right in zip(children[1::2], children[2::2]):
            left = ast.Binary(str(op_tok), left, right, _join(left.span, right.span), self._t(op_tok))
        return left

    def or_expr(self, meta, children):
        return ast.Logical("or", tuple(children), _join(children[0].span, children[-1].span))

    def and_expr(self, meta, children):
        return ast.Logical("and", tuple(children), _join(children[0].span, children[-1].span))

    def not_(self, meta, children):
        return ast.Unary("not", children[0], self._s(meta))

    def neg(self, meta, children):
        return ast.Unary("-", children[0], self._s(meta))

    def compare(self, meta, children):
        left, op, right = children
        return ast.Binary(str(op), left, right, self._s(meta), self._t(op))

    def in_(self, meta, children):
        left, right = children
        return ast.Binary("in", left, right, self._s(meta), _between(self.path, left.span, right.span))

    def not_in(self, meta, children):
        left, right = children
        return ast.Binary("not in", left, right, self._s(meta), _between(self.path, left.span, right.span))

    def before(self, meta, children):
        left, right = children
        return ast.Order("before", str(left), str(right), self._s(meta), self._t(left), self._t(right))

    def after(self, meta, children):
        left, right = children
        return ast.Order("after", str(left), str(right), self._s(meta), self._t(left), self._t(right))

    def sum(self, meta, children):
        return self._binary_chain(meta, children)

    product = sum

    def comp_op(self, meta, children):
        return children[0]

    add_op = mul_op = agg = comp_op

    def field(self, meta, children):
        var, name = children
        return ast.Field(str(var), str(name), self._s(meta), self._t(var), self._t(name))

    def keys(self, meta, children):
        return tuple(ast.Key(self._string(tok), self._t(tok)) for tok in children)

    def annotation(self, meta, children):
        name, array = children
        return (str(name) + (str(array) if array else ""), self._s(meta))

    def _attr(self, meta, source: str, var: Token, keys, annotation, event: str = ""):
        ann, ann_span = annotation if annotation else ("", None)
        return ast.Attr(str(var), source, keys or (), event, ann, self._s(meta), self._t(var), ann_span)

    def attr(self, meta, children):
        var, keys, annotation = children
        return self._attr(meta, "attr", var, keys, annotation)

    def resource(self, meta, children):
        var, keys, annotation = children
        return self._attr(meta, "resource", var, keys, annotation)

    def event(self, meta, children):
        var, event, keys, annotation = children
        return self._attr(meta, "event", var, keys, annotation, self._string(event))

    def name(self, meta, children):
        return ast.Name(str(children[0]), self._s(meta))

    def call(self, meta, children):
        name, *args = children
        args = [a for a in args if a is not None]
        return ast.Call(str(name), tuple(args), self._s(meta), self._t(name))

    def is_set(self, meta, children):
        return ast.IsSet(children[0], self._s(meta))

    def _quant(self, meta, func: str, binding, where, value=None, by=None):
        func_span = self._span(meta.line, meta.column, meta.line, meta.column + len(func), meta.start_pos, meta.start_pos + len(func))
        return ast.Quantifier(func, binding, where, value, self._s(meta), func_span, by)

    def exists(self, meta, children):
        binding, where = children
        return self._quant(meta, "exists", binding, where)

    def count(self, meta, children):
        binding, where, by = children
        return self._quant(meta, "count", binding, where, None, by)

    def aggregate(self, meta, children):
        func, value, binding, where, by = children
        return self._quant(meta, str(func), binding, where, value, by)

    # -- literals
    def string(self, meta, children):
        return ast.Literal("string", self._string(children[0]), self._s(meta))

    def number(self, meta, children):
        raw = str(children[0])
        if any(c in raw for c in ".eE"):
            return ast.Literal("double", float(raw), self._s(meta))
        return self._int64("int", _digits(raw), self._s(meta))

    def duration(self, meta, children):
        raw = str(children[0])
        m = re.fullmatch(r"([0-9.]+)([a-z]+)", raw)
        assert m is not None  # the DURATION terminal guarantees the shape
        unit = _DURATION_NS[m.group(2)]
        if "." in raw:
            ns = float(m.group(1)) * unit
            value = round(ns) if ns <= _INT64_MAX else _INT64_MAX + 1
        else:
            value = _digits(m.group(1)) * unit
        return self._int64("duration", value, self._s(meta))

    def _int64(self, kind: str, value: int, span: SourceSpan) -> ast.Literal:
        """An int or duration literal, or E007 if it does not fit in 64 bits
        (and the largest value, which draws no follow-on warnings)."""
        if value <= _INT64_MAX:
            return ast.Literal(kind, value, span)
        limit = "9223372036854775807" if kind == "int" else "9223372036854775807ns (about 292 years)"
        self.diagnostics.append(Diagnostic("E007", f"{kind} literal out of range", span, (f"the largest is {limit}",)))
        return ast.Literal(kind, _INT64_MAX, span)

    def true(self, meta, children):
        return ast.Literal("bool", True, self._s(meta))

    def false(self, meta, children):
        return ast.Literal("bool", False, self._s(meta))

    def list_lit(self, meta, children):
        return ast.ListLit(tuple(c for c in children if c is not None), self._s(meta))

    # -- strings and templates
    def _string(self, tok: Token) -> str:
        if self._too_long(tok):
            return ""
        return self._unescape(str(tok)[1:-1], self._offset(tok.start_pos) + 1)

    def _too_long(self, tok: Token) -> bool:
        """Whether the string ``tok`` is past ``MAX_STRING_CHARS`` (then an E006, at its opening quote)."""
        size = len(tok) - 2
        if size <= MAX_STRING_CHARS:
            return False
        start = self._t(tok)
        span = SourceSpan(self.path, start.line, start.col, start.line, start.col + 1, start.start, start.start + 1)
        self.diagnostics.append(Diagnostic(
            "E006", f"string literal too long: {size:,} characters (at most {MAX_STRING_CHARS:,})", span,
            ("strings are names, patterns and messages; keep large data out of rule files",), "the string starts here"))
        return True

    def _unescape(self, raw: str, offset: int) -> str:
        if "\\" not in raw:
            return raw
        out: list[str] = []
        i = 0
        while i < len(raw):
            ch = raw[i]
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            nxt = raw[i + 1 : i + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
            elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", raw[i + 2 : i + 6]):
                out.append(chr(int(raw[i + 2 : i + 6], 16)))
                i += 6
            else:
                span = self.lines.span(self.path, offset + i, offset + i + 2)
                hint = "known escapes: \\n \\t \\r \\0 \\\\ \\\" \\' \\uXXXX"
                self.diagnostics.append(Diagnostic("E003", f"unknown escape sequence `\\{nxt}`", span, (hint,)))
                out.append(nxt)
                i += 2
        return "".join(out)

    def _template(self, tok: Token) -> tuple[str | ast.TemplatePart, ...]:
        """Split a message string into text and ``{expr}`` holes (``{{``/``}}``
        are literal braces).  Holes are parsed with the expression grammar at
        their true file position, so their diagnostics point into the string."""
        if self._too_long(tok):
            return ()
        raw = str(tok)[1:-1]
        base = self._offset(tok.start_pos) + 1
        parts: list[str | ast.TemplatePart] = []
        text_start = i = 0
        while i < len(raw):
            if raw.startswith("{{", i) or raw.startswith("}}", i):
                i += 2
                continue
            if raw[i] == "}":
                span = self.lines.span(self.path, base + i, base + i + 1)
                self.diagnostics.append(Diagnostic("E034", "unmatched `}` in message template", span, ("write `}}` for a literal brace",)))
                i += 1
                continue
            if raw[i] != "{":
                i += 1
                continue
            close = _hole_end(raw, i + 1)
            if close < 0:
                span = self.lines.span(self.path, base + i, base + len(raw))
                self.diagnostics.append(Diagnostic("E034", "unclosed `{` in message template", span, ("write `{{` for a literal brace",)))
                break
            parts.append(self._text_part(raw[text_start:i], base + text_start))
            parts.append(self._hole(raw[i + 1 : close], base + i + 1))
            i = text_start = close + 1
        parts.append(self._text_part(raw[text_start:], base + text_start))
        return tuple(p for p in parts if p != "")

    def _text_part(self, raw: str, offset: int) -> str:
        return self._unescape(raw, offset).replace("{{", "{").replace("}}", "}")

    def _hole(self, raw: str, offset: int) -> ast.TemplatePart:
        """The hole ``raw`` at file offset ``offset``, parsed on its own and
        placed at its file position (so its diagnostics point into the string)."""
        span = self.lines.span(self.path, offset, offset + len(raw))
        origin = (span.line, span.col, offset)
        tree = self.holes.get(raw)
        if tree is None:
            try:
                tree = self.holes[raw] = _lark().parse(raw, start="expr")
            except UnexpectedInput as err:
                diag = _syntax_diagnostic(err, raw, self.path)
                self.diagnostics.append(Diagnostic("E034", f"in message template: {diag.message}", _shift(diag.span, origin), diag.hints))
                return ast.TemplatePart(ast.Literal("string", "", span), span)
        sub = _AstBuilder(self.path, self.text, self.lines, origin, self.holes)
        expr = sub.build(tree)
        self.diagnostics += sub.diagnostics
        return ast.TemplatePart(expr, span)


def _digits(raw: str) -> int:
    """The value of a run of decimal digits, or (past 19 digits, which no
    64-bit value has) one more than the largest 64-bit integer: Python
    refuses to convert thousands of digits, and none would fit anyway."""
    return int(raw) if len(raw.lstrip("0")) <= 19 else _INT64_MAX + 1


def _hole_end(raw: str, i: int) -> int:
    """Index of the ``}`` closing a hole that starts at ``i`` (quotes inside
    the hole may contain braces), or -1."""
    quote = ""
    while i < len(raw):
        ch = raw[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "}":
            return i
        i += 1
    return -1


def _join(a: SourceSpan, b: SourceSpan) -> SourceSpan:
    return SourceSpan(a.path, a.line, a.col, b.end_line, b.end_col, a.start, b.end)


def _between(path: str, a: SourceSpan, b: SourceSpan) -> SourceSpan:
    """The gap between two spans (where an operator keyword sits)."""
    return SourceSpan(path, a.end_line, a.end_col + 1, b.line, max(b.col - 1, 1), a.end + 1, b.start - 1)
