"""``faulttrace test``: run rule and fault-tree fixture tests (promtool-style) through the real decode and analysis.

A case's trace is read once (``processor.otlp.tracefile``): its requests go to
the analysis, and the same requests, read through the OTLP/JSON mapping
(``processor.otlp.otlpjson``), are the spans ``dsl.fixtures.compare`` matches
expectations against.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dsl import RuleError, RuleSet, load_rules
from dsl.fixtures import FixtureError, FixtureSpan, HealthyCeiling, compare, find_fixture_files, load_fixture_file
from processor.otlp import otlpjson
from processor.otlp.tracefile import TraceFileError, read_requests
from processor.tools.firingrate import firing_rates
from processor.tools.offline import analyze


def read_trace(path: str | Path) -> tuple[list[ExportTraceServiceRequest], list[FixtureSpan]]:
    """A case's trace file (OTLP/JSON, JSON lines, gzip, protobuf): its requests, and their spans."""
    try:
        requests = read_requests(path)
        return requests, [s for r in requests for s in _fixture_spans(otlpjson.request_to_document(r))]
    except TraceFileError as err:
        raise FixtureError(str(err)) from None
    except otlpjson.OtlpJsonError as err:
        raise FixtureError(f"{path}: malformed OTLP/JSON: {err}") from None


def _fixture_spans(doc: dict[str, Any]) -> Iterator[FixtureSpan]:
    """The spans of a request's OTLP/JSON document, attribute values decoded."""
    for resource, span, intrinsics in otlpjson.spans(doc):
        trace_id, span_id, parent, service, name, kind, start, end, code, message = intrinsics
        yield FixtureSpan(
            trace_id, span_id, parent, name, service, kind, start, end, code, message,
            attributes=otlpjson.attribute_values(span.get("attributes")),
            resource={key: otlpjson.any_value(value) for key, value in resource.items()},
            events=tuple((e.get("name", ""), otlpjson.attribute_values(e.get("attributes")))
                         for e in span.get("events") or ()),
        )


def _healthy_problems(ceiling: HealthyCeiling, rules: RuleSet) -> list[str]:
    """What fires on the fault-free traces above its ceiling (no localizer: like the cases, rules alone)."""
    try:
        requests = [r for path in ceiling.traces for r in read_trace(path)[0]]
    except FixtureError as err:
        return [str(err)]
    rates = firing_rates(requests, rules)
    return ceiling.problems((*rates.rules, *rates.trees))


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
                requests, spans = read_trace(case.trace)
            except FixtureError as err:
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
        if fixture.healthy is not None:
            problems = _healthy_problems(fixture.healthy, rules)
            passed, failed = (passed, failed + 1) if problems else (passed + 1, failed)
            if problems:
                files = fixture.healthy.traces
                names = files[0].name if len(files) == 1 else f"{len(files)} files"
                out.write(f"{path}:\nFAIL healthy traces ({names})\n" + "".join(f"  + {p}\n" for p in problems))
    out.write(f"{passed} passed, {failed} failed\n")
    return 1 if failed else 0
