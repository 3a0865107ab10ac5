"""The rule language's lexer as the direct parser runs it: Lark's contextual
lexer's tokens, from one regular expression.

Lark's contextual lexer tries, at each token, the terminals the parser's
state accepts, in several Python calls a token (a match for the whitespace
before it, another for the token, a line counter, a keyword callback).
This lexer matches every terminal at once, in the order Lark's lexers try
them, and keeps the token when the parser's state accepts its terminal: the
state's own lexer tries a subset of the same terminals in the same order, so
it would have matched the same text as the same terminal.  A word is a
keyword where the state accepts that keyword, otherwise a ``NAME`` where the
state accepts one (what Lark's keyword callback does).  Anything else (a
terminal the state does not accept, as ``5ms`` where only a number may
follow, or text no terminal matches) is handed, for that one token, to
Lark's lexer for the state, so tokens and errors are Lark's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedToken
from lark.lexer import ContextualLexer, LexerState


class FastLexer:
    """A drop-in for ``lark``'s ``ContextualLexer`` (its ``lex``), built over one."""

    def __init__(self, inner: ContextualLexer, states: dict[Any, Any]) -> None:
        root = inner.root_lexer
        self.inner = inner
        self.ignore = frozenset(root.ignore_types)
        self.newline_types = frozenset(root.newline_types)
        # terminals as Lark's lexers order them; a string a regular terminal matches
        # whole (a keyword, for NAME) is not tried on its own: that terminal's match becomes it
        self.keywords: dict[str, dict[str, str]] = {}
        alternatives = []
        regular = [t for t in root.terminals if t.pattern.type == "re"]
        for term in root.terminals:
            if term.pattern.type == "str":
                owner = next((r for r in regular if r.priority == term.priority and not term.pattern.flags
                              and re.fullmatch(r.pattern.to_regexp(), term.pattern.value)), None)
                if owner is not None:
                    self.keywords.setdefault(owner.name, {})[term.pattern.value] = term.name
                    continue
            alternatives.append(f"(?P<{term.name}>{term.pattern.to_regexp()})")
        # what is ignored before a token is skipped in the same match (group 1): no other
        # terminal can match where an ignored one starts (test_lexer checks the grammar's);
        # atomic, so that the token after it cannot take back any of it (`# a comment=`)
        skip = "|".join(t.pattern.to_regexp() for t in root.terminals if t.name in self.ignore)
        self.pattern = re.compile(f"((?>(?:{skip})*))(?:{'|'.join(alternatives)})", root.g_regex_flags)
        self.accepts = {state: frozenset(actions) for state, actions in states.items()}

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Iterator[Token]:
        """Lark's ``Lexer.lex``: the tokens of ``lexer_state``'s text, each as the
        parser in ``parser_state`` would have Lark's contextual lexer produce it."""
        line_ctr = lexer_state.line_ctr
        text, end = lexer_state.text.text, lexer_state.text.end
        stack = parser_state.state_stack
        accepts, keywords, ignore, newline_types = self.accepts, self.keywords, self.ignore, self.newline_types
        match, new_token = self.pattern.match, Token._future_new
        pos, line, line_start = line_ctr.char_pos, line_ctr.line, line_ctr.line_start_pos
        while pos < end:
            m = match(text, pos, end)
            kind = m.lastgroup if m is not None else None
            if kind is not None:
                start = m.end(1)
                if start != pos:
                    lines = text.count("\n", pos, start)
                    if lines:
                        line += lines
                        line_start = text.rindex("\n", pos, start) + 1
                    pos = start
                value = m.group(kind)
                stop = m.end()
                lines = value.count("\n") if kind in newline_types else 0
                if kind in ignore:
                    if lines:
                        line += lines
                        line_start = pos + value.rindex("\n") + 1
                    pos = stop
                    continue
                allowed = accepts[stack[-1]]
                names = keywords.get(kind)
                if names is not None and value in names and names[value] in allowed:
                    kind = names[value]
                elif kind not in allowed:
                    kind = None
            if kind is None or lines:
                # Lark's own lexer for this state (and for a token across lines, as rare as it is)
                line_ctr.char_pos, line_ctr.line, line_ctr.line_start_pos = pos, line, line_start
                line_ctr.column = pos - line_start + 1
                token = self._lark_token(lexer_state, parser_state)
                if token is None:
                    return
                pos, line, line_start = line_ctr.char_pos, line_ctr.line, line_ctr.line_start_pos
                yield token
                continue
            token = new_token(kind, value, pos, line, pos - line_start + 1, line, stop - line_start + 1, stop)
            lexer_state.last_token = token
            pos = stop
            yield token
        line_ctr.char_pos, line_ctr.line, line_ctr.line_start_pos = pos, line, line_start
        line_ctr.column = pos - line_start + 1

    def _lark_token(self, lexer_state: LexerState, parser_state: Any) -> Token | None:
        """The next token as Lark's contextual lexer makes it (None at the end),
        raising its errors as it does."""
        try:
            return self.inner.lexers[parser_state.position].next_token(lexer_state, parser_state)
        except EOFError:
            return None
        except UnexpectedCharacters as err:
            # as ContextualLexer.lex: text another state's terminal matches is an unexpected token
            root = self.inner.root_lexer
            last = lexer_state.last_token
            try:
                token = root.next_token(lexer_state, parser_state)
            except UnexpectedCharacters:
                raise err from None
            raise UnexpectedToken(token, err.allowed, state=parser_state, token_history=[last],
                                  terminals_by_name=root.terminals_by_name) from None
