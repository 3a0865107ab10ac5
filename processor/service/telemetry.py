"""Self-observability: the process's Prometheus metrics, in one registry.

Names follow the collector's own telemetry (``otelcol_receiver_accepted_spans``
becomes ``faulttrace_receiver_accepted_spans_total``), labelled by component
id and transport.  The registry is per pipeline, never the global default, so
tests and benchmarks can run several pipelines in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Telemetry:
    """Every metric faulttrace exposes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # `_created` series double the exposition for no operational value (the
        # collector exposes none); the switch is process-wide in prometheus_client.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.receiver_accepted_spans = Counter(
            "faulttrace_receiver_accepted_spans", "Spans accepted into the store.",
            ["receiver", "transport"], registry=r)
        self.receiver_refused_spans = Counter(
            "faulttrace_receiver_refused_spans", "Spans refused (malformed, invalid ids, overload).",
            ["receiver", "transport"], registry=r)
        self.receiver_requests = Counter(
            "faulttrace_receiver_requests", "Export requests by outcome (grpc status code name).",
            ["receiver", "transport", "code"], registry=r)
        self.exporter_sent_spans = Counter(
            "faulttrace_exporter_sent_spans", "Spans the downstream acknowledged.",
            ["exporter"], registry=r)
        self.exporter_send_failed_spans = Counter(
            "faulttrace_exporter_send_failed_spans", "Spans given up on after retries or a permanent error.",
            ["exporter"], registry=r)
        self.exporter_retries = Counter(
            "faulttrace_exporter_retries", "Retried export attempts.", ["exporter"], registry=r)
        self.exporter_queue_size = Gauge(
            "faulttrace_exporter_queue_size", "What waits in the sending queue, in its sizer's unit (payloads by default).", ["exporter"], registry=r)
        self.exporter_queue_capacity = Gauge(
            "faulttrace_exporter_queue_capacity", "Capacity of the sending queue, in its sizer's unit.",
            ["exporter"], registry=r)
        self.buffered_spans = Gauge(
            "faulttrace_processor_buffered_spans", "Spans held in the store, waiting for their trace.", registry=r)
        self.buffered_traces = Gauge(
            "faulttrace_processor_buffered_traces", "Traces held in the store, not yet complete.", registry=r)
        self.released_traces = Counter(
            "faulttrace_processor_released_traces", "Traces released for export, by reason.",
            ["reason"], registry=r)
        self.late_spans = Counter(
            "faulttrace_processor_late_spans", "Spans that arrived after their trace was released.",
            registry=r)
        self.memory_limiter_refused_requests = Counter(
            "faulttrace_memory_limiter_refused_requests", "Export requests refused above the soft memory limit.",
            ["processor"], registry=r)
        self.memory_limiter_used_bytes = Gauge(
            "faulttrace_memory_limiter_used_bytes",
            "Resident memory of faulttrace and its analysis worker at the last check.", ["processor"], registry=r)
        self.memory_limiter_limit_bytes = Gauge(
            "faulttrace_memory_limiter_limit_bytes", "The memory limiter's limits, soft and hard.",
            ["processor", "limit"], registry=r)
        self.memory_limiter_refusing = Gauge(
            "faulttrace_memory_limiter_refusing", "1 while receivers refuse data for want of memory.",
            ["processor"], registry=r)

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
