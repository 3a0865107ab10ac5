"""The exporter interface every exporter implements.

Modelled on opentelemetry-python's SpanExporter: a tiny surface (``start``,
``export``, ``shutdown``), failures expected in normal operation reported as
values, not raised: a payload's outcome reaches the pipeline through its
``on_settled`` callback (``model.ExportPayload``).  ``export`` may wait (a full sending queue pushes back on
the pipeline, which then stops releasing traces and, once its store is full,
makes receivers refuse with a retryable status); it never drops a payload
silently: a payload given up on is counted as failed.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable

from processor.model import ExportPayload
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)


class Exporter(abc.ABC):
    """One configured exporter, identified by its component id (``otlp/backend``)."""

    def __init__(self, component_id: str) -> None:
        self.component_id = component_id

    async def start(self) -> None:
        """Open connections and start consumers; called once, inside the event loop."""

    @abc.abstractmethod
    async def export(self, payload: ExportPayload) -> None:
        """Accept a payload for delivery; returns once it is queued (or sent, without a queue)."""

    @abc.abstractmethod
    async def shutdown(self, timeout: float) -> None:
        """Deliver what is queued, waiting at most ``timeout`` seconds, then close."""


class LocalExporter(Exporter):
    """An exporter that writes each payload here (a file, a log) instead of sending
    it: a payload is done once written, or once writing it failed (logged, counted)."""

    def __init__(self, component_id: str, telemetry: Telemetry) -> None:
        super().__init__(component_id)
        self._sent = telemetry.exporter_sent_spans.labels(component_id)
        self._failed = telemetry.exporter_send_failed_spans.labels(component_id)

    async def _write_settled(self, payload: ExportPayload, write: Callable[[bytes], None], doing: str) -> None:
        """``write(payload.data)`` on a thread (decoding a large payload takes
        milliseconds), counted and settled either way."""
        try:
            await asyncio.to_thread(write, payload.data)
        except Exception:  # component boundary: a bad payload or a full disk fails this payload only
            log.exception("exporter %s: dropping %d spans: cannot %s", self.component_id, payload.span_count, doing)
            self._failed.inc(payload.span_count)
        else:
            self._sent.inc(payload.span_count)
        payload.settled()
