"""``faulttrace test``: run rule and fault-tree fixture tests (promtool-style) through the real decode and analysis."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from dsl import RuleError, load_rules
from dsl.fixtures import FixtureError, compare, find_fixture_files, load_fixture_file, load_otlp_json
from processor.otlp.tracefile import TraceFileError, read_requests
from processor.tools.offline import analyze


def run_fixture_tests(paths: Iterable[str | Path], out: TextIO) -> int:
    """Run every fixture file under ``paths``; print failures with a diff; 1 if any failed."""
    files = find_fixture_files(paths)
    if not files:
        out.write("no fixture files (*.test.yaml) found\n")
        return 1
    passed = failed = 0
    for path in files:
        try:
            fixture = load_fixture_file(path)
            rules = load_rules(fixture.rule_files)
        except (FixtureError, RuleError) as err:
            out.write(f"ERROR {path}: {err}\n")
            failed += 1
            continue
        for case in fixture.cases:
            try:
                requests = read_requests(case.trace)
                spans = load_otlp_json(case.trace)
            except (TraceFileError, FixtureError) as err:
                out.write(f"ERROR {path}: {case.name}: {err}\n")
                failed += 1
                continue
            missing = sorted({t.tree for t in case.trees} - set(rules.tree_ids))
            if missing:
                out.write(f"ERROR {path}: {case.name}: unknown fault tree(s) {', '.join(missing)}\n")
                failed += 1
                continue
            if case.trees:
                selected = rules.select_trees([t.tree for t in case.trees], case.rules)
            else:
                selected = rules.select(case.rules) if case.rules else rules
            outcome = analyze(requests, selected)
            result = compare(case, spans, outcome.findings, outcome.trees)
            if result.ok:
                passed += 1
            else:
                failed += 1
                out.write(f"{path}:\n{result.diff()}\n")
    out.write(f"{passed} passed, {failed} failed\n")
    return 1 if failed else 0
