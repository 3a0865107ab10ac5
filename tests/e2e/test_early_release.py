"""Complete traces leave early: through a real pipeline, spans from the opentelemetry-sdk's OTLP/gRPC
exporter; a trace whose root has ended and whose spans all have their parent leaves
``complete_grace`` after its last span, one with a parent missing waits ``decision_wait``, and a
span arriving after the early release is a late span, exported with its trace's verdict."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.harness import config_dict, grpc_exporter, wait_until
from tests.support.sdk import arrived_any, export, span_ids
from tests.support.sdk import grpc_exporter as sdk_grpc_exporter

pytestmark = pytest.mark.timeout(60)
DECISION_WAIT = 4.0
GRACE = 0.3


def nested_trace() -> list[ReadableSpan]:
    """root > a > b, finished by a real SDK tracer (in end order: b, a, root)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("faulttrace-tests")
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("a"), \
            tracer.start_as_current_span("b"):
        pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def send(port: int, spans: Sequence[ReadableSpan]) -> float:
    assert export(sdk_grpc_exporter(port), spans).name == "SUCCESS"
    return time.monotonic()


def arrival_time(sink, spans: Sequence[ReadableSpan], timeout: float) -> float:
    wanted = span_ids(spans)
    wait_until(lambda: wanted <= {s.span_id for s in sink.spans()}, timeout, "the spans to reach the sink")
    return time.monotonic()


def test_complete_traces_leave_after_the_grace_incomplete_ones_after_decision_wait(grpc_sink, pipeline_factory):
    config = config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)}, decision_wait=DECISION_WAIT,
                         processor={"complete_grace": GRACE, "release_interval": 1.0})
    running = pipeline_factory(config)
    port = running.ports["otlp/grpc"]

    whole = nested_trace()
    sent = send(port, whole)
    early = arrival_time(grpc_sink, whole, DECISION_WAIT) - sent
    assert GRACE <= early < 1.5, early   # not decision_wait, nor the 1 s release interval late

    # b's parent (a) is held back: the root has ended, but the trace is not whole.
    b, a, root = nested_trace()
    sent = send(port, [b, root])
    time.sleep(1.5)
    assert not arrived_any(grpc_sink, [b, root])
    waited = arrival_time(grpc_sink, [b, root], DECISION_WAIT + 3) - sent
    assert waited >= DECISION_WAIT - 0.1, waited
    assert running.metric("faulttrace_processor_released_traces_total", reason="assembled") == 1
    assert running.metric("faulttrace_processor_released_traces_total", reason="complete") == 1

    # a arrives after its trace left: a late span, passed through at once.
    sent = send(port, [a])
    assert arrival_time(grpc_sink, [a], 3) - sent < 1.5
    assert running.metric("faulttrace_processor_late_spans_total") == 1
