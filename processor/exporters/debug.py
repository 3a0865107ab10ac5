"""The ``debug`` exporter: human-readable trace summaries on stderr, like the collector's.

One line per trace in each payload — trace id, span count, services, and the
verdict once the trace's root span carries ``rca.verdict.*`` attributes — via
the ``faulttrace.debug`` logger.  ``verbosity: detailed`` adds one line per
span (name, service, duration, status).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from processor.exporters.base import LocalExporter
from processor.exporters.config import DebugExporterConfig
from processor.model import ExportPayload
from processor.service.telemetry import Telemetry

LOGGER_NAME = "faulttrace.debug"
VERDICT_PREFIX = "rca.verdict."
_STATUS_NAMES = {Status.STATUS_CODE_UNSET: "UNSET", Status.STATUS_CODE_OK: "OK",
                 Status.STATUS_CODE_ERROR: "ERROR"}


@dataclass(slots=True)
class TraceSummary:
    """What the debug exporter says about one trace's spans in one payload."""

    trace_id: str
    spans: list[tuple[str, Span]] = field(default_factory=list)  # (service, span)

    @property
    def services(self) -> list[str]:
        return sorted({service for service, _ in self.spans})

    @property
    def verdict(self) -> dict[str, str]:
        """The ``rca.verdict.*`` attributes, from whichever span the annotator put them on (the trace's
        root span as ``dsl.spantree`` defines it: this exporter does not define the root again)."""
        for _, span in self.spans:
            verdict = {kv.key.removeprefix(VERDICT_PREFIX): any_value_text(kv.value)
                       for kv in span.attributes if kv.key.startswith(VERDICT_PREFIX)}
            if verdict:
                return verdict
        return {}

    def line(self) -> str:
        text = f"trace {self.trace_id}: {len(self.spans)} spans, services: {', '.join(self.services)}"
        verdict = self.verdict
        if verdict:
            text += "; verdict: " + " ".join(f"{k}={v}" for k, v in sorted(verdict.items()))
        return text


def any_value_text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind in ("string_value", "int_value", "double_value", "bool_value"):
        return str(getattr(value, kind))
    if kind == "array_value":
        return ",".join(any_value_text(v) for v in value.array_value.values)
    return str(getattr(value, kind)).replace("\n", " ").strip()


def span_line(service: str, span: Span) -> str:
    duration_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    status = _STATUS_NAMES.get(span.status.code, str(span.status.code))
    message = f" ({span.status.message})" if span.status.message else ""
    return (f"  span {span.span_id.hex()} {span.name!r} service={service} duration={duration_ms:.3f}ms "
            f"status={status}{message}")


def summarize(req: ExportTraceServiceRequest) -> Iterator[TraceSummary]:
    """Traces in first-seen order, each with its spans and their services."""
    traces: dict[bytes, TraceSummary] = {}
    for rs in req.resource_spans:
        service = next((any_value_text(kv.value) for kv in rs.resource.attributes
                        if kv.key == "service.name"), "unknown_service")
        for ss in rs.scope_spans:
            for span in ss.spans:
                summary = traces.get(span.trace_id)
                if summary is None:
                    summary = traces[span.trace_id] = TraceSummary(span.trace_id.hex())
                summary.spans.append((service, span))
    return iter(traces.values())


class DebugExporter(LocalExporter):
    def __init__(self, component_id: str, config: DebugExporterConfig, telemetry: Telemetry) -> None:
        super().__init__(component_id, telemetry)
        self._detailed = config.verbosity == "detailed"
        self._log = logging.getLogger(LOGGER_NAME)
        self._handler: logging.Handler | None = None

    async def start(self) -> None:
        # The debug exporter's output is its purpose: make sure it reaches stderr even when
        # the application configured no logging (Python's last-resort handler shows warnings only).
        if self._log.getEffectiveLevel() > logging.INFO:
            self._log.setLevel(logging.INFO)
        if not self._log.hasHandlers():
            self._handler = logging.StreamHandler(sys.stderr)
            self._log.addHandler(self._handler)

    async def export(self, payload: ExportPayload) -> None:
        await self._write_settled(payload, self._print, "print them")

    async def shutdown(self, timeout: float) -> None:
        if self._handler is not None:
            self._handler.flush()
            self._log.removeHandler(self._handler)
            self._handler = None

    def _print(self, data: bytes) -> None:
        for summary in summarize(ExportTraceServiceRequest.FromString(data)):
            self._log.info("%s", summary.line())
            if self._detailed:
                for service, span in summary.spans:
                    self._log.info("%s", span_line(service, span))
