"""The real opentelemetry-sdk OTLP exporters as clients of a faulttrace pipeline: spans made by
an SDK tracer, exported over gRPC or HTTP with TLS, client certificates and headers, as an
instrumented application would send them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.harness import wait_until
from tests.support.otlp_sink import OtlpGrpcSink


def make_spans(service: str, children: int = 2) -> Sequence[ReadableSpan]:
    """A finished trace of a root and ``children`` child spans from a real SDK tracer."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("faulttrace-tests")
    with tracer.start_as_current_span("root"):
        for i in range(children):
            with tracer.start_as_current_span(f"child-{i}"):
                pass
    provider.shutdown()
    return memory.get_finished_spans()


def grpc_exporter(port: int, *, ca: Path | None = None, client: tuple[Path, Path] | None = None,
                  headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> GrpcSpanExporter:
    """TLS when ``ca`` is given (trusting it), a client certificate ``(cert, key)`` for mTLS."""
    if ca is None:
        return GrpcSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, headers=dict(headers or {}),
                                timeout=timeout)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client[1].read_bytes() if client else None,
        certificate_chain=client[0].read_bytes() if client else None)
    return GrpcSpanExporter(endpoint=f"https://127.0.0.1:{port}", credentials=credentials,
                            headers=dict(headers or {}), timeout=timeout)


def http_exporter(port: int, *, ca: Path | None = None, client: tuple[Path, Path] | None = None,
                  headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> HttpSpanExporter:
    scheme = "https" if ca is not None else "http"
    return HttpSpanExporter(endpoint=f"{scheme}://127.0.0.1:{port}/v1/traces",
                            certificate_file=str(ca) if ca else None,
                            client_certificate_file=str(client[0]) if client else None,
                            client_key_file=str(client[1]) if client else None,
                            headers=dict(headers or {}), timeout=timeout)


def export(exporter: SpanExporter, spans: Sequence[ReadableSpan]) -> SpanExportResult:
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def span_ids(spans: Sequence[ReadableSpan]) -> set[bytes]:
    return {span.context.span_id.to_bytes(8, "big") for span in spans}


def wait_arrived(sink: OtlpGrpcSink, spans: Sequence[ReadableSpan], timeout: float = 10.0) -> None:
    """Block until every one of ``spans`` reached the sink (through the pipeline)."""
    wanted = span_ids(spans)
    wait_until(lambda: wanted <= {s.span_id for s in sink.spans()}, timeout, "the spans to reach the sink")


def arrived_any(sink: OtlpGrpcSink, spans: Sequence[ReadableSpan]) -> bool:
    return bool(span_ids(spans) & {s.span_id for s in sink.spans()})
