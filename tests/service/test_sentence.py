"""processor.service.sentence and processor.service.incidents: what a person reads about a verdict."""

from __future__ import annotations

import pyarrow as pa
import pytest

from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, Symptom, TraceVerdict
from processor.service.incidents import MAX_GROUPS, SHOWN, Incidents
from processor.service.sentence import (
    SpanFacts,
    check_url_template,
    describe,
    finding,
    incident_key,
    span_facts,
)
from processor.store import released_from_rows

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
ROOT, CALL, DB = b"\x00" * 7 + b"\x01", b"\x00" * 7 + b"\x02", b"\x00" * 7 + b"\x03"


def evidence(source: str, layer: str, score: float, message: str = "", kind: str = "rule") -> Evidence:
    return Evidence(source, message or f"{source} says so", score, score, layer, kind)


def verdict(*evidences: Evidence, candidates: int = 1) -> TraceVerdict:
    top = Candidate(DB, "orders", "SELECT orders", 2, 0, 10, evidences, rank=1)
    others = tuple(Candidate(bytes([9, i] + [0] * 6), "x", "y", 1, 0, 1, (evidence("r", "code", 0.1),), rank=i + 2)
                   for i in range(candidates - 1))
    return TraceVerdict(TRACE, ROOT, (top, *others))


FACTS = {ROOT: SpanFacts("gateway", "POST /checkout", True, "503 Service Unavailable", 120.0)}


def test_a_sentence_names_cause_layer_confidence_message_what_it_explains_and_the_link() -> None:
    v = verdict(evidence("infra.connection_refused", "infrastructure", 0.75, "orders: connection to db refused"),
                evidence("code.exception", "code", 0.5))
    symptoms = (Symptom(CALL, DB, "inherited error"), Symptom(ROOT, CALL, "inherited error"))
    text = describe(v, symptoms, FACTS, "http://jaeger:16686/trace/{trace_id}")
    assert text == ('trace 4bf92f3577b34da6a3ce929d0e0e4736: root cause orders "SELECT orders" (infrastructure, '
                    "confidence 0.75): orders: connection to db refused; explains 2 spans; the user saw gateway "
                    '"POST /checkout" failed (503 Service Unavailable). '
                    "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736")


def test_the_quoted_finding_agrees_with_the_layer_shown() -> None:
    # whichever layer the vote gives (verdict.Candidate.layer), the message quoted is of that layer
    for evidences in ((evidence("code.exception", "code", 0.8), evidence("infra.a", "infrastructure", 0.5),
                       evidence("infra.b", "infrastructure", 0.6)),
                      (evidence("code.exception", "code", 0.4), evidence("infra.a", "infrastructure", 0.5),
                       evidence("infra.b", "infrastructure", 0.6))):
        c = verdict(*evidences).top
        assert c is not None and c.layer
        quoted = finding(c)
        assert quoted.layer == c.layer
        assert quoted.score == max(e.score for e in evidences if e.layer == c.layer)


def test_a_rule_is_quoted_before_a_stronger_localizer_source_of_the_same_layer() -> None:
    c = verdict(evidence("localizer.errors", "infrastructure", 0.9, kind="localizer"),
                evidence("infra.dependency_5xx", "infrastructure", 0.6)).top
    assert c is not None and finding(c).source == "infra.dependency_5xx"


def test_without_link_symptoms_or_root_facts_the_sentence_stays_short() -> None:
    v = verdict(evidence("data.x", "data", 0.9, "no rows"), candidates=3)
    assert describe(v, (), {}) == ('trace 4bf92f3577b34da6a3ce929d0e0e4736: root cause orders "SELECT orders" '
                                   "(data, confidence 0.90): no rows; 2 other candidates.")


def test_the_url_template_names_trace_id_only() -> None:
    assert check_url_template("http://tempo/{trace_id}") == "http://tempo/{trace_id}"
    with pytest.raises(ValueError, match=r"unknown placeholder \{span_id\}"):
        check_url_template("http://x/{trace_id}/{span_id}")
    with pytest.raises(ValueError, match="http://x/{"):
        check_url_template("http://x/{")


def test_span_facts_reads_only_the_spans_asked_for() -> None:
    table = pa.table({"span_id": [ROOT, CALL], "service": ["gateway", "orders"], "name": ["a", "b"],
                      "status_code": pa.array([2, 0], pa.uint8()), "status_message": ["boom", ""],
                      "start_ns": [0, 0], "end_ns": [2_000_000, 1_000_000]})
    assert span_facts(table, [ROOT]) == {ROOT: SpanFacts("gateway", "a", True, "boom", 2.0)}
    assert span_facts(table, []) == {}


def test_incidents_group_the_same_cause_and_say_how_many() -> None:
    incidents = Incidents(60.0)
    v = verdict(evidence("infra.connection_refused", "infrastructure", 0.75))
    key = incident_key(v, FACTS)
    assert key == ("orders SELECT orders", "gateway POST /checkout failed")
    for i in range(20):
        incidents.add(key, "infrastructure", "infra.connection_refused", f"trace {i}")
    incidents.add(("payment charge", ""), "code", "code.exception", "trace x")
    assert incidents.flush() == [
        "incident: orders SELECT orders → gateway POST /checkout failed: 20 traces in the last 60s "
        "(infrastructure, infra.connection_refused; e.g. trace 19)",
        "incident: payment charge: 1 trace in the last 60s (code, code.exception; e.g. trace x)"]
    assert incidents.flush() == []  # a quiet interval says nothing


def test_incidents_stay_bounded() -> None:
    incidents = Incidents(1.0)
    for i in range(MAX_GROUPS + 5):
        incidents.add((f"svc{i} op", ""), "code", "r", "t")
    lines = incidents.flush()
    assert len(lines) == SHOWN + 1
    assert lines[-1] == f"incident: {MAX_GROUPS + 5 - SHOWN} more traces with other causes in the last 1s"


def test_a_url_template_with_an_unknown_placeholder_is_a_config_error_naming_the_key(tmp_path) -> None:
    from processor.config import load_config
    from processor.confmap import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text("receivers: {otlp: {protocols: {grpc: {}}}}\n"
                    "processors: {faulttrace: {verdict_log: {trace_url_template: 'http://j/{traceid}'}}}\n"
                    "exporters: {debug: {}}\n"
                    "service: {pipelines: {traces: {receivers: [otlp], processors: [faulttrace], exporters: [debug]}}}\n")
    with pytest.raises(ConfigError, match=r"processors\.faulttrace\.verdict_log\.trace_url_template.*\{traceid\}"):
        load_config(str(path))


def test_last_span_times_are_taken_on_export_with_or_without_a_verdict() -> None:
    from processor.model import ReleasedSpans
    from processor.service.telemetry import Telemetry
    from processor.service.verdicts import VerdictObserver

    now = [100.0]
    telemetry = Telemetry()
    observer = VerdictObserver(telemetry, "faulttrace", log_verdicts=False, clock=lambda: now[0], max_traces=2)
    a, b = b"a" * 16, b"b" * 16
    observer.observe({a: 2, b: 1})
    now[0] = 103.5

    def released(*trace_ids: bytes) -> ReleasedSpans:
        return released_from_rows(list(trace_ids), [b"s" * 8] * len(trace_ids), [None] * len(trace_ids),
                                  [b""] * len(trace_ids), [0] * len(trace_ids), [0] * len(trace_ids), {}, {},
                                  len(set(trace_ids)))

    observer.exported(released(a, a), None)        # not analysed: no latency, the time is dropped
    observer.exported(released(b), BatchVerdict())  # analysed, no cause: 3.5 s
    latency = telemetry.verdict_latency.collect()[0].samples
    assert {s.name: s.value for s in latency if s.name.endswith(("_count", "_sum"))} == {
        "faulttrace_processor_verdict_latency_seconds_count": 1.0,
        "faulttrace_processor_verdict_latency_seconds_sum": 3.5}
    assert len(observer._last_span) == 0
    observer.observe({bytes([i]) * 16: 1 for i in range(10)})
    assert len(observer._last_span) == 4  # twice max_traces, the oldest forgotten


def test_metrics_and_incidents_count_only_the_root_causes_the_annotator_writes() -> None:
    import dataclasses

    from processor.service.telemetry import Telemetry
    from processor.service.verdicts import VerdictObserver

    telemetry = Telemetry()
    observer = VerdictObserver(telemetry, "faulttrace", log_verdicts=False, incidents=Incidents(60))
    strong = verdict(evidence("infra.connection_refused", "infrastructure", 0.9))
    weak = dataclasses.replace(verdict(evidence("code.exception", "code", 0.4)), trace_id=b"w" * 16,
                               min_confidence=0.7)
    assert weak.top is not None and weak.root_cause is None and weak.written == ()
    spans = released_from_rows([TRACE, weak.trace_id], [DB, DB], [ROOT, ROOT], [b"", b""], [0, 0], [0, 0], {}, {}, 2)
    observer.exported(spans, BatchVerdict({TRACE: strong, weak.trace_id: weak}))

    def total(metric) -> dict[tuple[str, ...], float]:
        return {tuple(s.labels.values()): s.value for m in metric.collect() for s in m.samples
                if s.name.endswith("_total")}

    assert sum(total(telemetry.root_cause_traces).values()) == 1
    assert {k[0] for k in total(telemetry.findings)} == {"infra.connection_refused"}  # not the one below the floor
    assert observer.incidents is not None
    lines = observer.incidents.flush()
    assert len(lines) == 1 and ": 1 trace in the last 60s (infrastructure, infra.connection_refused;" in lines[0]
