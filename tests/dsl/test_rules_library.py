"""The built-in library (rules/): clean under the checker, and every fixture
case passes when the rules run over its OTLP/JSON trace."""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import duckdb
import pytest

from dsl import RuleSet, check_paths, load_rules
from dsl.fixtures import compare, find_fixture_files, load_fixture_file
from processor.tools.ruletest import read_trace
from tests.support.dsl_spans import load_fixture

RULES = Path(__file__).resolve().parents[2] / "rules"
FIXTURES = find_fixture_files([RULES])
CASES = [(f, i) for f in FIXTURES for i in range(len(load_fixture_file(f).cases))]


@cache
def _ruleset(paths: tuple[Path, ...]) -> RuleSet:
    return load_rules(paths)


def test_library_is_clean():
    assert check_paths([RULES]) == []


def test_library_covers_every_layer_with_enough_rules_and_trees():
    rs = load_rules([RULES])
    layers = Counter(r.meta.layer for r in rs.rules)
    assert len(rs) >= 40 and len(rs.tree_ids) >= 8
    assert set(layers) == {"code", "data", "infrastructure", "semantic", "config"}
    assert min(layers.values()) >= 6, layers


def test_the_library_has_a_healthy_ceiling():
    """`faulttrace test rules/` measures the library on fault-free traces with their usual noise."""
    ceilings = [f.healthy for f in map(load_fixture_file, FIXTURES) if f.healthy is not None]
    assert ceilings and all(c.max_rate is not None and c.max_rate <= 0.01 for c in ceilings)
    assert sum(len(c.traces) for c in ceilings) >= 15


def test_every_tree_fires_and_does_not_fire_in_fixtures():
    fired, quiet = set(), set()
    for f in FIXTURES:
        for case in load_fixture_file(f).cases:
            fired |= {t.tree for t in case.trees if t.fired}
            quiet |= {t.tree for t in case.trees if not t.fired}
    ids = set(load_rules([RULES]).tree_ids)
    assert len(ids) >= 4 and ids - fired == set() and ids - quiet == set()


def test_every_rule_has_a_positive_and_a_negative_case():
    positive, negative = set(), set()
    for f in FIXTURES:
        for case in load_fixture_file(f).cases:
            positive |= {e.rule for e in case.expect}
            if not case.expect:
                negative |= set(case.rules)
    ids = set(load_rules([RULES]).ids)
    assert ids - positive == set() and ids - negative == set()


@pytest.mark.parametrize(("path", "index"), CASES, ids=[f"{p.stem}[{i}]" for p, i in CASES])
def test_fixture_case(path: Path, index: int):
    fixture = load_fixture_file(path)
    case = fixture.cases[index]
    ruleset = _ruleset(tuple(fixture.rule_files))
    if case.trees:
        ruleset = ruleset.select_trees([t.tree for t in case.trees], case.rules)
    _, spans = read_trace(case.trace)
    conn = duckdb.connect()
    try:
        load_fixture(conn, spans, ruleset.projection)
        evaluation = ruleset.evaluate_all(conn, "batch")
    finally:
        conn.close()
    result = compare(case, spans, evaluation.findings, evaluation.trees)
    assert result.ok, result.diff()
