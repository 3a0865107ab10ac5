"""Self-observability: the process's Prometheus metrics, in one registry.

Names follow the collector's own telemetry (``otelcol_receiver_accepted_spans``
becomes ``faulttrace_receiver_accepted_spans_total``, ``otelcol_process_cpu_seconds``
``faulttrace_process_cpu_seconds_total``), labelled by component id and
transport as the collector labels them.  Besides the collector's series, the
verdicts: traces analysed and with a root cause, findings by source (rule,
fault tree or localizer evidence) and layer, analysis and verdict latency.

Every label's values are bounded: component ids by the configuration, a
finding's ``source`` by the loaded rule set, its fault trees and the
localizer's evidence sources, ``layer`` by the five layers, ``process`` by
the two processes.  No label carries a service, operation or trace.

The registry is per pipeline, never the global default, so tests and
benchmarks can run several pipelines in one process.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from processor.service.memory import rss

SIGNAL = "traces"  # the collector's otel_signal label: faulttrace handles traces only
# Seconds: one batch's analysis takes milliseconds to tens of seconds (a backlog of 5,000 traces).
ANALYSIS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds from a trace's last span to its export: decision_wait (5 s by default) plus a release
# interval plus the analysis, so the buckets reach past the waits people configure.
VERDICT_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)


def version() -> str:
    """faulttrace's installed version ('unknown' when run from a tree that was never installed)."""
    try:
        return metadata.version("faulttrace")
    except metadata.PackageNotFoundError:
        return "unknown"


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

        self.processor_incoming_items = Counter(
            "faulttrace_processor_incoming_items", "Spans the faulttrace processor took in (stored).",
            ["processor", "otel_signal"], registry=r)
        self.processor_outgoing_items = Counter(
            "faulttrace_processor_outgoing_items", "Spans the faulttrace processor handed to the exporters.",
            ["processor", "otel_signal"], registry=r)
        self.exporter_enqueue_failed_spans = Counter(
            "faulttrace_exporter_enqueue_failed_spans",
            "Spans an exporter could not queue (it was shut down; a full queue waits instead of failing).",
            ["exporter"], registry=r)
        self.analyzed_traces = Counter(
            "faulttrace_processor_analyzed_traces", "Traces analysed (rules, fault trees, localizer).", registry=r)
        self.root_cause_traces = Counter(
            "faulttrace_processor_root_cause_traces", "Analysed traces given a root cause (rca.root_cause).",
            registry=r)
        self.findings = Counter(
            "faulttrace_processor_findings",
            "Findings on blamed spans (rca.finding events): by source (a rule id, a fault tree id or a "
            "localizer source), kind (rule, fault_tree, localizer) and layer.",
            ["source", "kind", "layer"], registry=r)
        self.analysis_duration = Histogram(
            "faulttrace_processor_analysis_duration_seconds", "Time to analyse one released batch of traces.",
            registry=r, buckets=ANALYSIS_BUCKETS)
        self.verdict_latency = Histogram(
            "faulttrace_processor_verdict_latency_seconds",
            "Per analysed trace: from its last span received to its spans handed to the exporters.",
            registry=r, buckets=VERDICT_BUCKETS)
        self.process = ProcessCollector()
        r.register(self.process)
        build = Gauge("faulttrace_build_info", "Always 1: the version running, as labels.",
                      ["version", "python"], registry=r)
        build.labels(version(), platform.python_version()).set(1)

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class ProcessCollector(Collector):
    """CPU, resident memory and uptime of this process and of its analysis worker, read at
    each scrape (``faulttrace_process_*{process="faulttrace"|"analysis"}``), and the worker's
    restarts.  The worker is found through ``watch_worker``; without one (analysis in this
    process, or none) only ``process="faulttrace"`` is reported."""

    def __init__(self) -> None:
        self._worker_pid: Callable[[], int | None] = lambda: None
        self._worker_restarts: Callable[[], int] = lambda: 0
        self._started = time.time()

    def watch_worker(self, pid: Callable[[], int | None], restarts: Callable[[], int]) -> None:
        self._worker_pid, self._worker_restarts = pid, restarts

    def collect(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily("faulttrace_process_cpu_seconds", "Total CPU user and system time.",
                                  labels=["process"])
        resident = GaugeMetricFamily("faulttrace_process_memory_rss_bytes", "Resident memory.", labels=["process"])
        uptime = CounterMetricFamily("faulttrace_process_uptime_seconds", "Time since the process started.",
                                     labels=["process"])
        own = _proc_stat(os.getpid())
        if own is None:  # not Linux: what the standard library tells
            times = os.times()
            own = (times.user + times.system, time.time() - self._started)
        cpu.add_metric(["faulttrace"], own[0])
        resident.add_metric(["faulttrace"], rss())
        uptime.add_metric(["faulttrace"], own[1])
        pid = self._worker_pid()
        stat = _proc_stat(pid) if pid else None
        if stat is not None:
            cpu.add_metric(["analysis"], stat[0])
            resident.add_metric(["analysis"], rss(pid))
            uptime.add_metric(["analysis"], stat[1])
        restarts = CounterMetricFamily("faulttrace_analysis_worker_restarts",
                                       "Analysis worker processes started again after one died.")
        restarts.add_metric([], self._worker_restarts())
        yield from (cpu, resident, uptime, restarts)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, uptime seconds) of process ``pid`` from /proc; None when gone or not Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    # The command name (field 2) may hold spaces: the fields that follow start after its ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime, starttime = int(fields[11]), int(fields[12]), int(fields[19])
    return (utime + stime) / _TICKS, max(0.0, boot_uptime - starttime / _TICKS)
