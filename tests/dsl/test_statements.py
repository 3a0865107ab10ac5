"""Rules run in statements of bounded size (``dsl.api.statements``): the
findings are the same whatever the size, and a broken rule costs only itself.

The rule set here runs every rule as a statement (``columnar=False``): the
columnar plan (``dsl.columnar``, ``test_columnar.py``) would take them all."""

from __future__ import annotations

import dataclasses

import duckdb
import pytest

from dsl import load_rules
from dsl.api import STATEMENT_RULES, RuleRuntimeError, statements
from processor.tools.bench import bench_rule_text
from tests.dsl.bench_rules import build_batch


@pytest.fixture(scope="module")
def bench_rules(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "bench.rules"
    path.write_text(bench_rule_text(3 * STATEMENT_RULES + 7), encoding="utf-8")  # a last, partial statement
    return dataclasses.replace(load_rules([path]), columnar=False)


def _findings(ruleset, size: int) -> list:
    conn = duckdb.connect()
    try:
        build_batch(conn, ruleset, 6_000)
        return dataclasses.replace(ruleset, statement_rules=size).evaluate(conn, "batch")
    finally:
        conn.close()


def test_statements_of_any_size_find_the_same(bench_rules):
    one = _findings(bench_rules, len(bench_rules))  # every rule in one statement, as before
    assert len({f.rule_id for f in one}) > len(bench_rules) // 3  # the batch makes many rules fire
    for size in (1, 3, STATEMENT_RULES):
        assert _findings(bench_rules, size) == one, size


def test_statements_are_bounded_and_in_order(bench_rules):
    stmts = statements(bench_rules.rules, STATEMENT_RULES)
    assert [len(s.rules) for s in stmts] == [STATEMENT_RULES] * 3 + [7]
    assert tuple(r for s in stmts for r in s.rules) == bench_rules.rules
    with pytest.raises(ValueError):
        statements(bench_rules.rules, 0)


def test_a_broken_rule_costs_only_itself_in_its_statement(bench_rules):
    rules = list(bench_rules.rules[:STATEMENT_RULES])
    rules[3] = dataclasses.replace(rules[3], sql="SELECT error('boom')", params=())
    broken = dataclasses.replace(bench_rules, rules=tuple(rules))
    conn = duckdb.connect()
    build_batch(conn, broken, 6_000)
    errors: list[RuleRuntimeError] = []
    found = broken.evaluate(conn, "batch", on_error=errors.append)
    whole = {f.rule_id for f in _findings(bench_rules, STATEMENT_RULES)}
    assert [e.rule_id for e in errors] == [rules[3].id]
    assert {f.rule_id for f in found} == (whole & {r.id for r in rules}) - {rules[3].id}


def test_a_selection_keeps_the_statement_size(bench_rules):
    small = dataclasses.replace(bench_rules, statement_rules=3)
    picked = small.select(small.ids[:7])
    assert picked.statement_rules == 3
    assert [len(s.rules) for s in picked._rule_statements] == [3, 3, 1]
    assert small.select_trees([]).statement_rules == 3
