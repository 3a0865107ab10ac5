"""dsl.lexer: the direct parser's lexer makes Lark's contextual lexer's tokens and errors.

Compared by parsing the same texts twice, once with each lexer: every rule
file of the repository, and those files broken at random (a character
dropped, doubled or replaced), so the fallback to Lark's lexer (a terminal
the state does not accept, text no terminal matches) is exercised too."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from lark import TextSlice
from lark.lexer import LexerThread

from dsl import parser
from dsl.lexer import FastLexer

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "rules").glob("*.rules")) + sorted((ROOT / "tests" / "dsl" / "golden").glob("*.rules"))
NOISE = ' \n\t#"\'{}()[]<>=!~.,:|+-*/%5a_\x00é'


def _parse_with(lexer, monkeypatch: pytest.MonkeyPatch, text: str):
    with monkeypatch.context() as patch:
        patch.setattr(parser, "_fast_lexer", lambda: lexer)
        return parser.parse(text, "x.rules")


def _mutations(text: str, rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        i = rng.randrange(len(text))
        how = rng.randrange(3)
        if how == 0:
            out.append(text[:i] + text[i + 1:])
        elif how == 1:
            out.append(text[:i] + text[i] + text[i:])
        else:
            out.append(text[:i] + rng.choice(NOISE) + text[i + 1:])
    return out


def test_the_lexers_agree_on_every_rule_file_and_on_broken_copies(monkeypatch):
    lark_lexer = parser._lark().parser.lexer
    fast = parser._fast_lexer()
    assert isinstance(fast, FastLexer)
    rng = random.Random(15)
    compared = failed = 0
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        for variant in [text, *_mutations(text, rng, 12)]:
            expected = _parse_with(lark_lexer, monkeypatch, variant)
            assert _parse_with(fast, monkeypatch, variant) == expected, (path, variant)
            compared += 1
            failed += any(d.code in ("E001", "E002") for d in expected[1])
    assert compared >= 100 and failed >= 20  # the broken copies did reach the error paths


def test_tokens_match_lark_token_for_token_positions_included():
    # every built-in rule file in one text: more than one piece (parse lexes each on its own)
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "rules").glob("*.rules")))
    assert len(text) > 2 * parser._PIECE_CHARS
    seen = []
    fast = parser._fast_lexer()
    original = fast.lex

    def recording(lexer_state, parser_state):
        for token in original(lexer_state, parser_state):
            seen.append((token.type, str(token), token.start_pos, token.line, token.column,
                         token.end_line, token.end_column, token.end_pos))
            yield token

    fast.lex = recording
    try:
        assert parser.parse(text, "all.rules")[1] == []
    finally:
        del fast.lex
    lark_tokens = []
    frontend = parser._lark().parser
    thread = LexerThread.from_text(frontend.lexer, TextSlice(text, 0, len(text)))
    own = frontend.parser.parser  # Lark's own LALR parser, run with Lark's lexer, recording its tokens
    lark_parser = own.__class__(own.parse_table, {r: list for r in _rules(own)})
    original_lex = thread.lex

    def recording_lark(parser_state):
        for token in original_lex(parser_state):
            lark_tokens.append((token.type, str(token), token.start_pos, token.line, token.column,
                                token.end_line, token.end_column, token.end_pos))
            yield token

    thread.lex = recording_lark
    lark_parser.parse(thread, "start")
    assert len(seen) > 4000 and seen == lark_tokens


def _rules(lark_parser) -> set:
    return {arg for actions in lark_parser.parse_table.states.values() for action, arg in actions.values()
            if action.name == "Reduce"}


def test_no_terminal_but_an_ignored_one_starts_where_whitespace_or_a_comment_does():
    # FastLexer skips what is ignored before a token in the same match as the token
    root = parser._lark().parser.lexer.root_lexer
    for term in root.terminals:
        if term.name in root.ignore_types:
            continue
        for start in " \t\f\r\n#":
            assert not re.match(term.pattern.to_regexp(), start), term.name
