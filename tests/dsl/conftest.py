"""Fixtures for dsl tests: rule sets from inline text, and evaluation over
synthetic traces loaded per the store contract."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from dsl import Finding, RuleSet, load_rules
from tests.support.dsl_spans import Trace, load


@pytest.fixture
def rules_from(tmp_path: Path) -> Callable[[str], RuleSet]:
    """Compile rule text (written to a temp file) into a RuleSet."""
    counter = iter(range(1_000_000))

    def make(text: str) -> RuleSet:
        path = tmp_path / f"r{next(counter)}.rules"
        path.write_text(text, encoding="utf-8")
        return load_rules([path])

    return make


@pytest.fixture
def run() -> Callable[..., list[Finding]]:
    """Evaluate a RuleSet over traces in a fresh in-memory DuckDB."""

    def evaluate(ruleset: RuleSet, *traces: Trace) -> list[Finding]:
        conn = duckdb.connect()
        try:
            load(conn, traces, ruleset.projection)
            return ruleset.evaluate(conn, "batch")
        finally:
            conn.close()

    return evaluate
