"""dsl.parser: text -> AST, syntax diagnostics with exact positions, recovery."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lark.exceptions import UnexpectedInput

from dsl import ast, parser
from dsl.diagnostics import LineIndex
from dsl.parser import parse, parse_expr

RULE = '''\
list codes = [500, 503]
const slow = 1.5s
macro failed(s) = s.status = error

rule code.example {
  title "Example"
  layer code
  tags ["a", "b"]
  match span e, child c of e
  where failed(e) and c.attr["http.response.status_code" | "http.status_code"]:int in codes
    and not exists(child d of c where d.duration > 250ms)
  blame c
  message "{c.name} took {c.duration}"
}
'''


def test_parses_every_item_kind():
    f, diags = parse(RULE, "x.rules")
    assert diags == []
    kinds = [type(i) for i in f.items]
    assert kinds == [ast.ListDef, ast.ConstDef, ast.MacroDef, ast.Rule]
    rule = f.items[3]
    assert rule.id == "code.example"
    assert [m.key for m in rule.meta] == ["title", "layer", "tags"]
    (match,) = rule.matches
    assert [(b.relation, b.var, b.other) for b in match.bindings] == [("span", "e", ""), ("child", "c", "e")]
    assert rule.blames[0].var == "c"


def test_literals_are_typed_values():
    f, _ = parse(RULE)
    assert f.items[1].value == ast.Literal("duration", 1_500_000_000, f.items[1].value.span)
    assert [i.value for i in f.items[0].value.items] == [500, 503]


@pytest.mark.parametrize(
    ("text", "ns"),
    [("1ns", 1), ("2us", 2_000), ("250ms", 250_000_000), ("2s", 2_000_000_000), ("1.5m", 90_000_000_000), ("1h", 3_600_000_000_000)],
)
def test_duration_units(text, ns):
    expr, diags = parse_expr(text)
    assert diags == [] and expr.kind == "duration" and expr.value == ns


def test_attribute_forms():
    expr, _ = parse_expr('e.event["exception"]["exception.type"]:string')
    assert (expr.source, expr.event, [k.key for k in expr.keys], expr.annotation) == ("event", "exception", ["exception.type"], "string")
    presence, _ = parse_expr('e.event["exception"]')
    assert presence.keys == () and presence.event == "exception"
    res, _ = parse_expr('e.resource["k8s.pod.name"]')
    assert res.source == "resource"
    arr, _ = parse_expr('e.attr["x"]:string[]')
    assert arr.annotation == "string[]"


def test_precedence_and_or_not_arithmetic():
    expr, _ = parse_expr("not a.depth > 1 + 2 * 3 or b.depth = 1 and c.depth = 2")
    assert isinstance(expr, ast.Logical) and expr.op == "or"
    first, second = expr.items
    assert isinstance(first, ast.Unary) and first.op == "not"
    cmp = first.operand
    assert cmp.op == ">" and cmp.right.op == "+" and cmp.right.right.op == "*"
    assert isinstance(second, ast.Logical) and second.op == "and"


def test_and_or_chains_are_one_node_arithmetic_is_left_nested():
    chain, _ = parse_expr(" or ".join(f"e.depth = {i}" for i in range(5)))
    assert isinstance(chain, ast.Logical) and len(chain.items) == 5
    assert (chain.span.col, chain.span.end_col) == (1, chain.items[-1].span.end_col)
    diff, _ = parse_expr("1 - 2 - 3")
    assert diff.op == "-" and diff.left.op == "-" and diff.right.value == 3


def test_positions_are_one_based_and_exact():
    f, _ = parse(RULE, "x.rules")
    rule = f.items[3]
    assert (rule.id_span.line, rule.id_span.col, rule.id_span.end_col) == (5, 6, 18)
    blame = rule.blames[0]
    assert (blame.span.line, blame.span.col) == (12, 9)


def test_message_template_holes_parse_at_their_file_position():
    f, diags = parse(RULE, "x.rules")
    msg = f.items[3].messages[0]
    holes = [p for p in msg.parts if isinstance(p, ast.TemplatePart)]
    assert [type(h.expr) for h in holes] == [ast.Field, ast.Field]
    assert (holes[0].span.line, holes[0].span.col) == (13, 13)
    assert msg.parts[1] == " took "


def test_template_escapes_and_quotes_inside_holes():
    f, diags = parse('rule a.b { message "{{literal}} {e.attr[\'k}\']} \\u00e9" }')
    assert diags == []
    parts = f.items[0].messages[0].parts
    assert parts[0] == "{literal} "
    assert parts[1].expr.keys[0].key == "k}"
    assert parts[2] == " é"


def test_syntax_error_position_and_expected_hint():
    _, diags = parse("rule a.b {\n  match span e wher e.duration > 1ms\n}\n", "f.rules")
    (d,) = diags
    assert d.code == "E001"
    assert (d.span.line, d.span.col) == (2, 22)
    assert any("did you mean `where`" in h for h in d.hints)


def test_unexpected_end_of_file():
    _, diags = parse("rule a.b {\n  match span e where e.duration >\n", "f.rules")
    assert [d.code for d in diags] == ["E001"]
    assert "end of file" in diags[0].message
    assert any("a duration" in h for h in diags[0].hints)


def test_unterminated_string_and_bad_character():
    _, diags = parse('rule a.b { title "oops\n}\nrule c.d { title @ }\n')
    assert [d.code for d in diags] == ["E004", "E002"]
    assert (diags[0].span.line, diags[0].span.col) == (1, 18)
    assert (diags[1].span.line, diags[1].span.col) == (3, 18)


def test_recovery_reports_every_broken_item_and_keeps_good_ones():
    text = "rule a.one { match span e where }\nrule a.two { match span e }\nrule a.three { match span e where e. }\n"
    f, diags = parse(text)
    assert [d.span.line for d in diags] == [1, 3]
    assert [i.id for i in f.items] == ["a.two"]


def _rules(n: int, match: str = '  match span s,\n  event e of s where e.name = "x"') -> str:
    return "".join(f'rule a.r{i} {{\n  title "t"\n{match}\n}}\n' for i in range(n))


def test_a_large_file_is_parsed_in_pieces_with_file_positions():
    # 500 rules make many pieces (parser._PIECE_CHARS); each rule's second line of bindings starts with
    # `event`, an item keyword: a piece may end inside a rule, and is then parsed with the next one
    text = _rules(500)
    assert len(parser._pieces(text)) > 3
    f, diags = parse(text)
    assert diags == [] and [i.id for i in f.items] == [f"a.r{i}" for i in range(500)]
    last = f.items[-1]
    assert (last.span.line, last.span.col, last.span.start) == (5 * 499 + 1, 1, text.index("rule a.r499"))
    assert [b.relation for b in last.matches[0].bindings] == ["span", "event"]


def test_errors_far_apart_in_a_large_file_each_cost_their_item():
    lines = _rules(500, '  match span s where s.name = "x"').split("\n")
    lines[4 * 100 + 2] = "  match span s where s.name ="  # rule a.r100: the expression is cut short
    lines[4 * 450 + 1] = '  title "t'  # rule a.r450: an unterminated string
    text = "\n".join(lines)
    assert len(parser._pieces(text)) > 2  # the two errors are in different pieces
    f, diags = parse(text)
    assert [(d.code, d.span.line) for d in diags] == [("E001", 4 * 100 + 4), ("E004", 4 * 450 + 2)]
    assert len(f.items) == 498 and {"a.r100", "a.r450"}.isdisjoint(i.id for i in f.items)
    assert diags[1].span.col == 9 and diags[1].span.start == text.index('"t\n', text.index("rule a.r450"))


def test_parsing_straight_to_the_ast_builds_what_walking_the_parse_tree_builds():
    # parse() has Lark call the builder's methods as it reduces; holes and parse_expr walk a parse tree
    root = Path(__file__).resolve().parents[2]
    paths = sorted((root / "rules").glob("*.rules")) + sorted((root / "tests" / "dsl" / "golden").glob("*.rules"))
    compared = 0
    for path in paths:
        text = path.read_text(encoding="utf-8")
        try:
            tree = parser._lark().parse(text, start="start")
        except UnexpectedInput:
            continue  # a file with syntax errors (golden/syntax.rules): recovery is tested above
        walker = parser._AstBuilder(str(path), text, LineIndex(text))
        walked = walker.build(tree)
        f, diags = parse(text, str(path))
        assert list(f.items) == parser._within_nesting(walked, walker.diagnostics), path
        assert diags == walker.diagnostics, path
        compared += 1
    assert compared >= 10


def test_unknown_escape_is_reported_not_raised():
    _, diags = parse('rule a.b { title "x\\qy" }')
    assert [(d.code, d.span.col, d.span.end_col) for d in diags] == [("E003", 20, 22)]


def test_template_errors_point_into_the_string():
    _, diags = parse('rule a.b { message "x {e.} y {z" }')
    assert [d.code for d in diags] == ["E034", "E034"]
    assert diags[0].span.col == 26  # the `}` after `e.`
    assert "unclosed" in diags[1].message


def test_comments_and_whitespace_are_ignored():
    f, diags = parse("# header\nrule a.b { # trailing\n title 'x' }\n")
    assert diags == [] and f.items[0].meta[0].value.value == "x"


def test_no_parser_is_built_at_import():
    code = "import dsl, dsl.parser; assert dsl.parser._lark.cache_info().currsize == 0; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_the_grammar_analysis_is_kept_in_the_users_cache_and_a_bad_copy_is_ignored(tmp_path):
    code = "from dsl.parser import parse; print(parse('rule a.b { title \"x\" }')[1])"
    env = {"PATH": "", "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)  # noqa: E731
    assert run().stdout.strip() == "[]"
    (cached,) = (tmp_path / "cache" / "faulttrace").glob("grammar-lark*.pickle")
    assert cached.stat().st_size > 10_000 and (cached.parent.stat().st_mode & 0o077) == 0
    assert run().stdout.strip() == "[]"  # read from the cache
    cached.write_bytes(b"not a pickle")
    done = run()
    assert done.stdout.strip() == "[]" and done.stderr == ""
    assert cached.stat().st_size > 10_000  # analysed again and saved

