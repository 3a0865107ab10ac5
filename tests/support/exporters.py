"""Test data and metric helpers shared by the exporter tests."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processor.model import ExportPayload
from processor.service.telemetry import Telemetry

# Tiny intervals keep retry tests to milliseconds.
FAST_RETRY = {"initial_interval": 0.01, "max_interval": 0.05, "max_elapsed_time": 10}


def make_request(first_trace: int = 1, traces: int = 1, spans_per_trace: int = 2,
                 service: str = "checkout", filler: str = "") -> ExportTraceServiceRequest:
    """Traces numbered from ``first_trace``; span ids unique across calls with distinct ranges."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    for t in range(first_trace, first_trace + traces):
        for s in range(spans_per_trace):
            span = ss.spans.add(trace_id=t.to_bytes(16, "big"), span_id=(t * 1000 + s + 1).to_bytes(8, "big"),
                                name=f"op{s}", kind=2, start_time_unix_nano=1_000_000_000,
                                end_time_unix_nano=1_002_500_000)
            if s:
                span.parent_span_id = (t * 1000 + 1).to_bytes(8, "big")
            if filler:
                span.attributes.append(KeyValue(key="filler", value=AnyValue(string_value=filler)))
    return req


def payload_of(req: ExportTraceServiceRequest) -> ExportPayload:
    spans = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    traces = len({sp.trace_id for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans})
    return ExportPayload(req.SerializeToString(), spans, traces)


def metric(telemetry: Telemetry, name: str, component_id: str) -> float:
    value = telemetry.registry.get_sample_value(name, {"exporter": component_id})
    return 0.0 if value is None else value
