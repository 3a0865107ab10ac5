"""processor.service.admin: Prometheus /metrics and /healthz of a running pipeline."""

from __future__ import annotations

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import config_dict, grpc_export, grpc_exporter, sid, simple_request, tid, wait_until

pytestmark = pytest.mark.timeout(60)


def scrape(running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = requests.get(f"{running.metrics_url}/metrics", timeout=5)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_count_what_happened(grpc_sink, pipeline_factory):
    # decision_wait leaves time to scrape while the spans are still buffered, even on a busy machine.
    running = pipeline_factory(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)}, decision_wait=1.0))
    samples = scrape(running)
    for name in ("faulttrace_processor_buffered_spans", "faulttrace_processor_buffered_traces"):
        assert value(samples, name) == 0
    assert value(samples, "faulttrace_exporter_queue_size", exporter="otlp_grpc") == 0
    assert value(samples, "faulttrace_exporter_queue_capacity", exporter="otlp_grpc") == 1000

    req = simple_request(1, traces=2, spans_per_trace=3)
    req.resource_spans[0].scope_spans[0].spans.add(trace_id=bytes(16), span_id=sid(1))  # refused
    req.resource_spans[0].scope_spans[0].spans.add(trace_id=tid(3), span_id=b"\x01")  # refused
    response = grpc_export(running.grpc_target, req)
    assert response.partial_success.rejected_spans == 2
    requests.post(running.http_url, data=simple_request(50).SerializeToString(),
                  headers={"Content-Type": "application/x-protobuf"}, timeout=5)
    samples = scrape(running)  # before decision_wait: buffered
    assert value(samples, "faulttrace_processor_buffered_spans") == 8
    assert value(samples, "faulttrace_processor_buffered_traces") == 3
    assert value(samples, "faulttrace_receiver_accepted_spans_total", receiver="otlp", transport="grpc") == 6
    assert value(samples, "faulttrace_receiver_accepted_spans_total", receiver="otlp", transport="http") == 2
    assert value(samples, "faulttrace_receiver_refused_spans_total", receiver="otlp", transport="grpc") == 2

    grpc_sink.wait_for_spans(8)
    wait_until(lambda: value(scrape(running), "faulttrace_exporter_sent_spans_total", exporter="otlp_grpc") == 8,
               what="sent spans counted")
    samples = scrape(running)
    assert value(samples, "faulttrace_exporter_send_failed_spans_total", exporter="otlp_grpc") == 0
    assert value(samples, "faulttrace_processor_buffered_spans") == 0
    assert value(samples, "faulttrace_processor_buffered_traces") == 0
    # whole traces leave after complete_grace ("assembled"), the rest after decision_wait ("complete")
    assert sum(v for (name, labels), v in samples.items()
               if name == "faulttrace_processor_released_traces_total"
               and dict(labels)["reason"] in ("complete", "assembled")) == 3
    assert value(samples, "faulttrace_receiver_requests_total", receiver="otlp", transport="grpc", code="OK") == 1


def test_send_failures_are_counted(grpc_sink, pipeline_factory):
    # permanent (not retried) for the payload and for every part the exporter splits it into
    grpc_sink.fail_next(100, grpc.StatusCode.INVALID_ARGUMENT)
    running = pipeline_factory(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)}))
    grpc_export(running.grpc_target, simple_request(1, traces=1, spans_per_trace=4))
    wait_until(lambda: value(scrape(running), "faulttrace_exporter_send_failed_spans_total",
                             exporter="otlp_grpc") == 4, what="failed spans counted")
    assert value(scrape(running), "faulttrace_exporter_sent_spans_total", exporter="otlp_grpc") == 0


def test_refused_requests_are_counted(pipeline_factory, grpc_sink):
    running = pipeline_factory(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)}))
    reply = requests.post(running.http_url, data=b"\xff\xff", headers={"Content-Type": "application/x-protobuf"},
                          timeout=5)
    assert reply.status_code == 400
    assert value(scrape(running), "faulttrace_receiver_requests_total", receiver="otlp", transport="http",
                 code="400") == 1


def test_healthz(pipeline_factory, grpc_sink):
    running = pipeline_factory(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)}, decision_wait=60))
    grpc_export(running.grpc_target, simple_request(1, traces=2))
    reply = requests.get(f"{running.metrics_url}/healthz", timeout=5)
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "buffered_spans": 4, "buffered_traces": 2}
    assert requests.get(f"{running.metrics_url}/nope", timeout=5).status_code == 404
    url = running.metrics_url
    running.stop()  # the buffered traces are exported on the way out
    grpc_sink.wait_for_spans(4)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=2)


def test_no_admin_server_when_metrics_address_is_empty(pipeline_factory, grpc_sink):
    running = pipeline_factory(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)}, metrics=""))
    assert "metrics" not in running.ports
    assert set(running.ports) == {"otlp/grpc", "otlp/http"}
