"""dsl.limits: inputs past the documented limits are refused with a
diagnostic, and long inputs within them check, compile and run, without
exhausting Python's stack (docs/rules.md#limits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsl import RuleError, check_paths, load_rules
from dsl.limits import MAX_FILE_BYTES, MAX_NESTING, MAX_STRING_CHARS
from tests.support.dsl_spans import Trace

HEAD = 'rule t.r {\n  title "t"\n  layer code\n  severity low\n  confidence 0.5\n  match span e where '
COL = len("  match span e where ") + 1  # the column the condition starts at, on line 6


def rule(where: str, before: str = "") -> str:
    return before + HEAD + where + "\n}\n"


def diagnose(tmp_path: Path, text: str) -> list:
    path = tmp_path / "t.rules"
    path.write_text(text, encoding="utf-8")
    return check_paths([path])


def only(diags: list, code: str):
    assert [d.code for d in diags] == [code], diags
    return diags[0]


# ---- long chains are one level: they check, compile and run ---------------------------------


def test_a_10000_term_or_chain_checks_compiles_and_finds_what_it_says(rules_from, run):
    terms = " or ".join(f'e.name = "n{i}"' for i in range(10_000))
    rs = rules_from(rule(terms))
    assert rs.rules[0].sql.count(" OR ") == 9_999
    t = Trace()
    root = t.span("n0")
    hit = t.span("n9999", root)
    t.span("other", root)
    t.span("n10000", root)
    assert sorted(f.span_id for f in run(rs, t)) == sorted([root.span_id, hit.span_id])


def test_and_chains_and_deep_parentheses_cost_no_nesting(rules_from, run):
    terms = " and ".join(f'e.name != "n{i}"' for i in range(1_000))
    parens = "(" * 10_000 + "e.depth >= 0" + ")" * 10_000
    rs = rules_from(rule(f"{terms} and {parens}"))
    t = Trace()
    t.span("n1")
    kept = t.span("kept")
    assert [f.span_id for f in run(rs, t)] == [kept.span_id]


def test_nesting_up_to_the_limit_compiles_and_runs(rules_from, run):
    # every `not` is a level, and so is the field under them
    rs = rules_from(rule("not " * (MAX_NESTING - 1) + "e.is_root"))
    t = Trace()
    t.span("root")
    assert len(run(rs, t)) == (0 if MAX_NESTING % 2 == 0 else 1)


# ---- past the limit: E005 at the construct that goes past it ----------------------------------


def test_nesting_past_the_limit_is_e005_at_the_first_level_past_it(tmp_path):
    d = only(diagnose(tmp_path, rule("not " * 1_000 + "e.is_root")), "E005")
    assert (d.span.line, d.span.col) == (6, COL + 4 * MAX_NESTING)
    assert "more than 100 levels" in d.message and d.label == "level 101"


@pytest.mark.parametrize(("where", "offset"), [
    ("not " * MAX_NESTING + "e.is_root", 4 * MAX_NESTING),  # the leaf is level 101
    ("e.depth > " + " + ".join(["1"] * MAX_NESTING), len("e.depth > ")),  # 1 + 1 + ... is left-nested
    ("e.depth > " + "-" * 1_000 + "1", len("e.depth > ") + MAX_NESTING - 1),
    # an `and` is a level, its `not` another: the 51st `and` chain (it starts after its bracket)
    ("(e.is_root and not " * 60 + "e.is_root" + ")" * 60, len("(e.is_root and not ") * 50 + 1),
])
def test_every_kind_of_nesting_counts(tmp_path, where, offset):
    d = only(diagnose(tmp_path, rule(where)), "E005")
    assert (d.span.line, d.span.col) == (6, COL + offset)


def test_macros_nest_as_deep_as_their_bodies_together(tmp_path):
    body = "not " * 60 + "s.is_root"
    text = rule("deep2(e)", f"macro deep1(s) = {body}\nmacro deep2(s) = {'not ' * 60}deep1(s)\n")
    d = only(diagnose(tmp_path, text), "E005")
    assert "once macros are expanded" in d.message
    assert d.span.line == 1 and any("in `deep1(...)` called at" in h for h in d.hints)


def test_a_macro_argument_nests_on_inside_the_body(tmp_path):
    text = rule("wrap(" + "not " * 60 + "e.is_root)", "macro wrap(x) = " + "not " * 60 + "x\n")
    d = only(diagnose(tmp_path, text), "E005")
    assert d.span.line == 1 and d.span.col == len("macro wrap(x) = " + "not " * 60) + 1


def test_events_nest_as_deep_as_their_gates_together(tmp_path):
    events = "".join(f"event e{i} = e{i - 1} and t.r\n" for i in range(1, 1_000))
    text = rule("e.is_root", "event e0 = not t.r\n" + events + 'tree t.t { title "t" top rule t.r cause e999 }\n')
    d = only(diagnose(tmp_path, text), "E005")
    assert d.message.startswith("event `e99` nests too deeply")
    assert (d.span.line, d.span.col) == (100, len("event e99 = ") + 1)


def test_a_gate_nested_past_the_limit(tmp_path):
    text = rule("e.is_root", 'tree t.t { title "t" top rule t.r cause ' + "not " * 500 + "t.r }\n")
    d = only(diagnose(tmp_path, text), "E005")
    assert d.message.startswith("gate nested too deeply")


def test_definitions_defined_through_themselves_are_errors_not_crashes(tmp_path):
    text = rule("e.depth > a and e.depth in l", "const a = b\nconst b = a\nlist l = [l]\n")
    diags = diagnose(tmp_path, text)
    assert {d.code for d in diags} >= {"E026"}
    assert any(d.message == "list `l` is defined through itself" for d in diags)


# ---- literals and files --------------------------------------------------------------------


def test_a_string_past_the_limit_is_e006_at_its_opening_quote(tmp_path):
    long = '"' + "x" * (MAX_STRING_CHARS + 1) + '"'
    d = only(diagnose(tmp_path, rule(f"e.name = {long}")), "E006")
    assert (d.span.line, d.span.col) == (6, COL + len("e.name = "))
    ok = rule('e.name = "' + "x" * MAX_STRING_CHARS + '"')
    assert diagnose(tmp_path, ok) == []


def test_a_huge_string_costs_time_in_proportion_only(tmp_path):
    # the lexer once kept state per character of a string: 5 MB took 1.5 GB
    d = only(diagnose(tmp_path, rule('e.name = "' + "x" * 3_000_000 + '"')), "E006")
    assert "3,000,000 characters" in d.message


@pytest.mark.parametrize("literal", ["99999999999999999999", "9" * 5_000, "9" * 5_000 + "ms", "9999999999999999s", "1e999"])
def test_numbers_past_64_bits_are_e007(tmp_path, literal):
    left = "e.duration > " if literal.endswith("s") else "e.depth > "
    if literal == "1e999":  # a double: infinity, as in Python and SQL
        assert diagnose(tmp_path, rule(left + literal)) == []
        return
    d = only(diagnose(tmp_path, rule(left + literal)), "E007")
    assert d.span.col == COL + len(left)


def test_a_file_past_the_limit_is_e041_and_is_not_read(tmp_path):
    path = tmp_path / "big.rules"
    path.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    d = only(check_paths([path]), "E041")
    assert (d.span.path, d.span.line) == (str(path), 1)
    path.write_bytes(b"#" * MAX_FILE_BYTES)
    assert [d.code for d in check_paths([path])] == ["W008"]  # read, and only a comment: empty


# ---- an unexpected exception is one diagnostic ------------------------------------------------


def test_an_internal_error_is_one_e000_where_the_checker_was(tmp_path, monkeypatch):
    def broken(self, e, scope):
        raise RuntimeError("boom")

    monkeypatch.setattr("dsl.checker._Checker._field", broken)
    path = tmp_path / "t.rules"
    path.write_text(rule('e.name = "x" and e.depth > 1'))
    d = only(check_paths([path]), "E000")
    assert d.message == "internal error: RuntimeError: boom"
    assert (d.span.line, d.span.col) == (6, COL)  # the field being checked
    with pytest.raises(RuleError) as info:
        load_rules([path])
    assert [x.code for x in info.value.diagnostics] == ["E000"]
