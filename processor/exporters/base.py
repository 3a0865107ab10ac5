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

from processor.model import ExportPayload


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
