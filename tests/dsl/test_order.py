"""Order between spans and `explains`, end to end over DuckDB: `a before b`,
`a after b`, the `preceding sibling` / `following sibling` axes, and the
span ids a finding explains."""

from __future__ import annotations

import pytest

from tests.dsl.test_compiler import names, rule
from tests.support.dsl_spans import Trace


@pytest.fixture
def agent() -> Trace:
    """An agent turn: plan (0-10) -> chat (10-40, truncated) -> parse (40-45, error) -> retry (44-50, overlaps parse),
    plus an unrelated child of chat."""
    t = Trace()
    root = t.span("invoke_agent", start=0, end=60, kind="internal", status="error")
    t.span("plan", root, start=0, end=10)
    chat = t.span("chat", root, start=10, end=40, kind="client", attrs={"gen_ai.response.finish_reasons": ["length"]})
    t.span("tokenize", chat, start=12, end=13)
    t.span("parse", root, start=40, end=45, status="error")
    t.span("retry", root, start=44, end=50, status="error")
    return t


@pytest.mark.parametrize(
    ("match", "where", "blame", "expected"),
    [
        ("span e, following sibling f of e", 'e.name = "chat"', "f", ["parse", "retry"]),
        ("span e, following sibling f of e", 'e.name = "parse"', "f", []),  # retry starts before parse ends
        ("span e, preceding sibling p of e", 'e.name = "retry"', "p", ["chat", "plan"]),
        ("span e, preceding sibling p of e", 'e.name = "plan"', "p", []),
        ("span e, span f", 'e.name = "chat" and e before f', "f", ["parse", "retry"]),
        ("span e, span f", 'e.name = "chat" and e after f', "f", ["plan"]),
        ("span e, span f", 'e.name = "parse" and f after e', "f", []),
        ("span e, span f", 'e.name = "tokenize" and f before e', "f", ["plan"]),
    ],
)
def test_order_and_sibling_axes(rules_from, run, agent, match, where, blame, expected):
    rs = rules_from(rule(where, match=match, blame=blame))
    assert names(run(rs, agent), agent) == sorted(expected)


def test_following_sibling_in_quantifiers_and_aggregates(rules_from, run, agent):
    where = "exists(following sibling f of e where f.status = error)"
    assert names(run(rules_from(rule(where)), agent), agent) == ["chat", "plan"]
    where = "count(preceding sibling p of e) = 2"
    assert names(run(rules_from(rule(where)), agent), agent) == ["parse", "retry"]  # retry overlaps parse


def test_order_never_crosses_traces(rules_from, run):
    a, b = Trace(), Trace()
    a.span("first", start=0, end=10)
    b.span("second", start=20, end=30)
    rs = rules_from(rule("e before f", match="span e, span f", blame="f"))
    assert run(rs, a, b) == []


def test_order_in_a_macro(rules_from, run, agent):
    text = rule('e.name = "chat" and follows(f, e)', match="span e, span f", blame="f",
                prelude="macro follows(x, y) = x after y")
    assert names(run(rules_from(text), agent), agent) == ["parse", "retry"]


def _explains(where: str, explains: str, match: str = "span e", blame: str = "") -> str:
    text = rule(where, match=match, blame=blame)
    return text[:-1] + f"  explains {explains}\n}}"


def by_name(trace: Trace, ids) -> list[str]:
    names_ = {s.span_id: s.name for s in trace.spans}
    return sorted(names_[i] for i in ids)


def test_explains_a_quantified_span(rules_from, run, agent):
    rs = rules_from(_explains('e.attr["gen_ai.response.finish_reasons"] contains "length" '
                              "and exists(following sibling f of e where f.status = error)", "f"))
    (f,) = run(rs, agent)
    assert by_name(agent, [f.span_id]) == ["chat"]
    assert by_name(agent, f.explains) == ["parse", "retry"]  # every span the quantifier finds


def test_explains_lists_the_spans_in_span_id_order(rules_from, run, agent):
    # a list, not a set: in one order whatever order the plan meets the spans in, so that a verdict
    # (its symptoms follow this order) is the same from run to run
    where = ('e.name = "plan" and (e.is_root or exists(following sibling c of e where c.name = "chat" '
             "and exists(following sibling f of c where f.name = \"parse\")))")
    for explains in ("c, f", "f, c"):
        (f,) = run(rules_from(_explains(where, explains)), agent)
        assert len(f.explains) == 2 and list(f.explains) == sorted(f.explains)


def test_explains_a_variable_of_match_once_per_blamed_span(rules_from, run, agent):
    rs = rules_from(_explains('e.name = "chat" and f.status = error', "f", match="span e, following sibling f of e"))
    (f,) = run(rs, agent)
    assert by_name(agent, f.explains) == ["parse", "retry"]


def test_explains_through_nested_quantifiers_and_or(rules_from, run, agent):
    where = ('e.name = "plan" and (e.is_root or exists(following sibling c of e where c.name = "chat" '
             "and exists(following sibling f of c where f.name = \"parse\")))")
    (f,) = run(rules_from(_explains(where, "c, f")), agent)
    assert by_name(agent, f.explains) == ["chat", "parse"]


def test_a_rule_without_explains_explains_nothing(rules_from, run, agent):
    (f,) = run(rules_from(rule('e.name = "chat"')), agent)
    assert f.explains == ()
    findings = run(rules_from(rule('e.name = "chat"', match="span e, child c of e")), agent)
    assert [x.explains for x in findings] == [()]


def test_a_finding_does_not_explain_its_own_span(rules_from, run):
    t = Trace()
    root = t.span("root", start=0, end=10)
    t.span("instant", root, start=5, end=5, status="error")
    t.span("other", root, start=5, end=5, status="error")
    rs = rules_from(_explains('e.name = "instant" and exists(sibling f of e where f.status = error and e before f)', "f"))
    (f,) = run(rs, t)
    assert by_name(t, f.explains) == ["other"]
