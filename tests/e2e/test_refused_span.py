"""One span the downstream refuses costs no other span.

Spans of many clients and traces are released together and regrouped into
shared payloads; the downstream refuses any payload holding one particular
span.  Each exporter cuts the refused payloads until that span travels alone:
every other span arrives, exactly once, and only the refused one is counted
as failed.
"""

from __future__ import annotations

import pytest
import requests

from tests.support.harness import (
    FAST_RETRY,
    assert_same_spans,
    config_dict,
    grpc_export,
    grpc_exporter,
    simple_request,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def test_a_span_the_downstream_refuses_costs_no_other_span(pipeline_factory, grpc_sink, http_sink):
    for sink in (grpc_sink, http_sink):
        sink.refuse_containing(b"refuse-me")
    running = pipeline_factory(config_dict(
        {"otlp_grpc": grpc_exporter(grpc_sink.port),
         "otlp_http": {"endpoint": f"http://127.0.0.1:{http_sink.port}", "retry_on_failure": FAST_RETRY}},
        decision_wait=0.3, processor={"release_interval": 1.0}))  # one release takes every trace
    good = []
    for client in range(8):
        req = simple_request(100 + 10 * client, traces=3, spans_per_trace=4, service=f"client-{client}")
        if client == 5:
            poisoned = req.resource_spans[0].scope_spans[0].spans[6]
            poisoned.name = "refuse-me"
        (grpc_export(running.grpc_target, req) if client % 2 else
         requests.post(running.http_url, data=req.SerializeToString(),
                       headers={"Content-Type": "application/x-protobuf"}, timeout=10).raise_for_status())
        good.append(req)
    del good[5].resource_spans[0].scope_spans[0].spans[6]
    for sink, exporter in ((grpc_sink, "otlp_grpc"), (http_sink, "otlp_http")):
        def counted(e: str = exporter) -> tuple[float, float]:
            return (running.metric("faulttrace_exporter_sent_spans_total", exporter=e),
                    running.metric("faulttrace_exporter_send_failed_spans_total", exporter=e))

        wait_until(lambda: counted() == (8 * 12 - 1, 1), what=f"{exporter} to deliver all but the refused span")
        assert_same_spans(good, sink.requests)
        assert running.metric("faulttrace_exporter_retries_total", exporter=exporter) == 0
