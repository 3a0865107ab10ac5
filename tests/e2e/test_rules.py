"""End to end: the opentelemetry-sdk OTLP gRPC exporter -> a running Pipeline with rules ->
otlp_grpc exporter -> a real OTLP sink.  The blamed span and the trace's root carry ``rca.*``;
every other span arrives exactly as the SDK sent it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.harness import assert_same_spans, config_dict, grpc_exporter, span_count

pytestmark = pytest.mark.timeout(60)

CUSTOM_RULES = """\
rule custom.legacy_provider {
  title "Payment through the legacy provider failed"
  layer config
  severity low
  confidence 0.5
  match span c
  where c.kind = client and c.status = error and c.attr["app.payment.provider"] = "legacy-pay"
  message "{c.service} paid through {c.attr['app.payment.provider']}"
}
"""


class Services:
    """Two instrumented services sending through the SDK's OTLP gRPC exporter, and what they sent."""

    def __init__(self, target: str) -> None:
        self._memory: list[InMemorySpanExporter] = []
        self._providers: list[TracerProvider] = []
        self.frontend = self._tracer("frontend", target)
        self.payments = self._tracer("payments", target)

    def _tracer(self, service: str, target: str) -> trace.Tracer:
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource({"service.name": service, "service.version": "1.0"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=target, insecure=True, timeout=5)))
        self._memory.append(memory)
        self._providers.append(provider)
        return provider.get_tracer("shop.instrumentation", "0.1")

    def shutdown(self) -> None:
        for provider in self._providers:
            provider.shutdown()

    def sent(self) -> list[ExportTraceServiceRequest]:
        return [encode_spans(m.get_finished_spans()) for m in self._memory]


def failing_checkout(s: Services) -> None:
    """frontend GET /checkout -> POST /charge -> payments POST /charge -> charge card (raises) -> load card (fine).

    The exception is raised three levels down; every span above it fails too."""
    with s.frontend.start_as_current_span("GET /checkout", context=context.Context(), kind=SpanKind.SERVER,
                                          attributes={"http.request.method": "GET", "http.route": "/checkout"}) as root:
        with s.frontend.start_as_current_span("POST /charge", kind=SpanKind.CLIENT, attributes={
                "http.request.method": "POST", "server.address": "payments",
                "app.payment.provider": "legacy-pay"}) as client:
            try:
                with s.payments.start_as_current_span("POST /charge", kind=SpanKind.SERVER, attributes={
                        "http.request.method": "POST", "http.route": "/charge", "http.response.status_code": 500}):
                    with s.payments.start_as_current_span("charge card"):
                        with s.payments.start_as_current_span("load card", attributes={"card.cached": True}):
                            pass
                        raise ValueError("card declined")
            except ValueError:
                pass  # the payments service answered 500
            client.set_attribute("http.response.status_code", 500)
            client.set_status(StatusCode.ERROR)
        root.set_attribute("http.response.status_code", 500)
        root.set_status(StatusCode.ERROR, "payment failed")


def healthy_home(s: Services) -> None:
    with s.frontend.start_as_current_span("GET /home", context=context.Context(), kind=SpanKind.SERVER,
                                          attributes={"http.request.method": "GET", "http.route": "/home",
                                                      "http.response.status_code": 200}):
        with s.frontend.start_as_current_span("GET /cart", kind=SpanKind.CLIENT, attributes={
                "http.request.method": "GET", "server.address": "cart", "http.response.status_code": 200,
                "app.payment.provider": "legacy-pay"}):
            pass


def rca(span: Span) -> dict[str, Any]:
    """The rca.* attributes of a span, as (AnyValue field, value)."""
    out: dict[str, Any] = {}
    for a in span.attributes:
        if a.key.startswith("rca."):
            kind = a.value.WhichOneof("value")
            out[a.key] = (kind, [x.string_value for x in a.value.array_value.values] if kind == "array_value"
                          else getattr(a.value, kind))
    return out


def without_rca(req: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """A copy with the rca.* attributes and rca.finding events taken off every span."""
    out = ExportTraceServiceRequest()
    out.CopyFrom(req)
    for rs in out.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                kept = [a for a in span.attributes if not a.key.startswith("rca.")]
                del span.attributes[:]
                span.attributes.extend(kept)
                events = [e for e in span.events if e.name != "rca.finding"]
                del span.events[:]
                span.events.extend(events)
    return out


def by_name(requests: list[ExportTraceServiceRequest]) -> dict[tuple[str, str], Span]:
    """(service, span name) -> span; the names used here are unique per service."""
    out = {}
    for req in requests:
        for rs in req.resource_spans:
            service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    assert (service, span.name) not in out
                    out[(service, span.name)] = span
    return out


def run(pipeline_factory, grpc_sink, processor: dict[str, Any], *scenarios) -> tuple[
        list[ExportTraceServiceRequest], list[ExportTraceServiceRequest]]:
    """Send the scenarios through a fresh pipeline; (what the SDK sent, what the sink received)."""
    faulttrace = pipeline_factory(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)}, decision_wait=0.2,
                                              processor=processor))
    services = Services(faulttrace.grpc_target)
    try:
        for scenario in scenarios:
            scenario(services)
    finally:
        services.shutdown()
    sent = services.sent()
    n = span_count(sent)
    grpc_sink.wait_for_spans(n, timeout=15)
    faulttrace.stop()  # everything released and exported: nothing more can arrive
    assert grpc_sink.span_count == n
    return sent, grpc_sink.requests


@pytest.fixture
def custom_rules(tmp_path: Path) -> Path:
    path = tmp_path / "shop.rules"
    path.write_text(CUSTOM_RULES)
    return path


def test_sdk_trace_through_pipeline_with_builtin_and_custom_rules(pipeline_factory, grpc_sink, custom_rules):
    # builtin_rules explicitly: the harness's configs switch the library off by default.
    sent, received = run(pipeline_factory, grpc_sink, {"rules": [str(custom_rules)], "builtin_rules": True},
                         failing_checkout, healthy_home)
    assert span_count(sent) == 7

    # Every span arrives exactly once under its resource and scope; minus the rca.* additions,
    # each is what the SDK sent.
    assert_same_spans(sent, [without_rca(r) for r in received])
    want, got = by_name(sent), by_name(received)
    annotated = {k for k, span in got.items() if rca(span) or any(e.name.startswith("rca.") for e in span.events)}
    assert annotated == {("frontend", "GET /checkout"), ("frontend", "POST /charge"), ("payments", "charge card")}
    for key in set(want) - annotated:  # untouched spans: the very same message, byte for byte
        assert got[key].SerializeToString(deterministic=True) == want[key].SerializeToString(deterministic=True), key

    # The exception raised three levels down is the root cause: code.deepest_exception, rank 1.
    card = got[("payments", "charge card")]
    attrs = rca(card)
    assert attrs["rca.root_cause"] == ("bool_value", True)
    assert attrs["rca.rank"] == ("int_value", 1)
    assert attrs["rca.layer"] == ("string_value", "code")
    assert attrs["rca.rule"][0] == "array_value" and "code.deepest_exception" in attrs["rca.rule"][1]
    assert attrs["rca.confidence"][0] == "double_value"
    findings = [{a.key: a.value.string_value for a in e.attributes} for e in card.events if e.name == "rca.finding"]
    assert {f["rca.rule"] for f in findings if "rca.rule" in f} == set(attrs["rca.rule"][1])
    # the built-in fault tree request.failure fired through this span: its finding names tree and cut set
    assert [f["rca.fault_tree"] for f in findings if "rca.fault_tree" in f] == ["request.failure"]
    assert attrs["rca.fault_tree"] == ("string_value", "request.failure")
    deepest = next(f for f in findings if f["rca.rule"] == "code.deepest_exception")
    assert deepest["rca.message"] == "payments: charge card raised ValueError: card declined"
    # The original attributes and events (the SDK's exception event) come first, unchanged.
    original = want[("payments", "charge card")]
    assert list(card.attributes)[:len(original.attributes)] == list(original.attributes)
    assert list(card.events)[:len(original.events)] == list(original.events)

    # The custom rule from processors.faulttrace.rules fires on the frontend's client span.
    client = rca(got[("frontend", "POST /charge")])
    assert client["rca.rule"] == ("array_value", ["custom.legacy_provider"])
    assert client["rca.layer"] == ("string_value", "config")
    assert client["rca.rank"][1] > 1

    # The root span names the top candidate.
    root = got[("frontend", "GET /checkout")]
    assert not root.parent_span_id
    verdict = rca(root)
    assert verdict["rca.verdict.span_id"] == ("string_value", card.span_id.hex())
    assert verdict["rca.verdict.service"] == ("string_value", "payments")
    assert verdict["rca.verdict.layer"] == ("string_value", "code")
    assert "code.deepest_exception" in verdict["rca.verdict.rule"][1]
    blamed = [s for s in got.values() if "rca.root_cause" in rca(s)]
    assert verdict["rca.verdict.candidates"] == ("int_value", len(blamed))
    assert "rca.root_cause" not in verdict  # the root itself is not blamed

    # The healthy trace, although the custom rule's attribute is on it, gets nothing.
    for key in (("frontend", "GET /home"), ("frontend", "GET /cart")):
        assert rca(got[key]) == {} and not [e for e in got[key].events if e.name.startswith("rca.")]


def test_builtin_rules_switched_off(pipeline_factory, grpc_sink, custom_rules):
    sent, received = run(pipeline_factory, grpc_sink, {"rules": [str(custom_rules)], "builtin_rules": False},
                         failing_checkout)
    assert_same_spans(sent, [without_rca(r) for r in received])
    got = by_name(received)
    assert rca(got[("payments", "charge card")]) == {}  # no built-in rule ran
    client = got[("frontend", "POST /charge")]
    assert rca(client)["rca.rule"] == ("array_value", ["custom.legacy_provider"])
    assert rca(client)["rca.rank"] == ("int_value", 1)
    assert rca(got[("frontend", "GET /checkout")])["rca.verdict.span_id"] == ("string_value", client.span_id.hex())


def test_rules_and_localizer_together_blame_the_origin_and_mark_its_symptoms(pipeline_factory, grpc_sink):
    # The product's default analysis: the rule library and the rule-free localizer, merged.
    sent, received = run(pipeline_factory, grpc_sink, {"builtin_rules": True, "localizer": {"enabled": True}},
                         failing_checkout, healthy_home)
    assert_same_spans(sent, [without_rca(r) for r in received])
    got = by_name(received)
    card = rca(got[("payments", "charge card")])
    assert card["rca.rank"] == ("int_value", 1)
    assert "code.deepest_exception" in card["rca.rule"][1]
    # both kinds of evidence agree: rca.rule names the rules, rca.evidence the localizer's sources
    assert not any(r.startswith("localizer.") for r in card["rca.rule"][1])
    assert card["rca.evidence"][1] and all(r.startswith("localizer.") for r in card["rca.evidence"][1])
    # the spans that only propagated the error up are symptoms, never root causes
    symptoms = [k for k in (("payments", "POST /charge"), ("frontend", "POST /charge"), ("frontend", "GET /checkout"))
                if "rca.symptom" in rca(got[k])]
    assert symptoms, "no span was marked a symptom"
    for key in (("payments", "POST /charge"), ("frontend", "POST /charge"), ("frontend", "GET /checkout")):
        attrs = rca(got[key])
        assert attrs.get("rca.symptom") == ("bool_value", True) or attrs.get("rca.rank", ("", 0))[1] > 1, key
        if "rca.symptom" in attrs:  # one link from what the user saw to the cause
            assert attrs["rca.caused_by"] == ("string_value", got[("payments", "charge card")].span_id.hex()), key
    assert rca(got[("frontend", "GET /checkout")])["rca.verdict.service"] == ("string_value", "payments")
    # the healthy trace carries nothing
    for key in (("frontend", "GET /home"), ("frontend", "GET /cart")):
        assert not rca(got[key]), key
