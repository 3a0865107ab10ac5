"""Grouping in aggregates: ``count(... by k) <op> x`` holds when it holds for
some group of the quantified spans with equal, non-nil ``k``."""

from __future__ import annotations

import pytest

from dsl import check_paths
from tests.dsl.test_compiler import names, rule
from tests.support.dsl_spans import Trace


@pytest.fixture
def trace() -> Trace:
    """A fan-out: three failing calls to `a`, one to `b`, two slow calls to `c`."""
    t = Trace()
    root = t.span("root", end=100)
    for i, (name, status, end) in enumerate([("a", "error", 5), ("a", "error", 5), ("a", "error", 5),
                                             ("b", "error", 5), ("c", "ok", 60), ("c", "ok", 70)]):
        t.span(name, root, start=i, end=end + i, status=status)
    return t


@pytest.mark.parametrize(("where", "fires"), [
    ("count(child c of e where c.status = error by c.name) >= 3", True),   # a: 3
    ("count(child c of e where c.status = error by c.name) >= 4", False),  # 4 errors, but no group of 4
    ("count(child c of e where c.status = error) >= 4", True),            # ungrouped: all four
    ("count(child c of e by c.name) = 1", True),                          # b
    ("avg(c.duration for child c of e by c.name) > 50ms", True),          # c
    ("max(c.duration for child c of e where c.status = error by c.name) > 50ms", False),
    ('count(child c of e by c.attr["app.missing"]) >= 1', False),          # a nil key is in no group
])
def test_a_grouped_comparison_holds_for_some_group(rules_from, run, trace, where, fires):
    assert names(run(rules_from(rule(f"e.is_root and {where}")), trace), trace) == (["root"] if fires else [])


@pytest.mark.parametrize(("where", "text"), [
    ("count(child c of e by c.name) + 1 > 3", "a grouped `count` (`by`) can only be compared"),
    ("3 < count(child c of e by c.name)", "a grouped `count` (`by`) can only be compared"),
    ("count(child c of e by c.status = error) > 1", "cannot group by a bool"),
])
def test_grouping_misused_is_e029(tmp_path, where, text):
    path = tmp_path / "g.rules"
    path.write_text(rule(where), encoding="utf-8")
    assert [(d.code, d.message) for d in check_paths([path])] == [("E029", text)]
