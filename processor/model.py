"""Typed values passed between pipeline stages.

receiver --DecodedRequest(SpanBatch)--> store --ReleasedSpans--> release
(analysis reads ``ReleasedSpans.table``; the verdict types are in
``analysis.verdict``) --> annotator --ExportPayload--> exporters.  Nothing
between stages is a loose dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa


@dataclass(slots=True)
class SpanBatch:
    """The spans of one request, columnar, ready for the store.

    ``table`` has the store's columns (``store.STORE_SCHEMA``: ``dsl.SPAN_COLUMNS``,
    ``resource_id``, ``scope_id``, ``raw``; no attributes).  ``resources`` and
    ``scopes`` map group ids to their encoded heads (``receivers.decode``).
    ``traces`` counts spans per trace id, for the assembler.
    """

    table: pa.Table
    resources: dict[int, bytes]
    scopes: dict[int, bytes]
    traces: dict[bytes, int]

    @property
    def span_count(self) -> int:
        return self.table.num_rows


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    """A validated request: the accepted spans and what was rejected and why."""

    batch: SpanBatch
    rejected_spans: int = 0
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class ReleasedSpans:
    """Spans leaving the store: row-aligned lists, grouped for export later, and
    ``table``, the same rows as the store kept them (``store.STORE_SCHEMA``) for analysis."""

    trace_ids: list[bytes]
    span_ids: list[bytes]
    parent_span_ids: list[bytes | None]
    raw: list[bytes]
    resource_ids: list[int]
    scope_ids: list[int]
    resources: dict[int, bytes]
    scopes: dict[int, bytes]
    trace_count: int
    table: pa.Table | None = None

    @property
    def span_count(self) -> int:
        return len(self.raw)


@dataclass(frozen=True, slots=True)
class ExportPayload:
    """One encoded ``ExportTraceServiceRequest``, as every exporter receives it.

    ``on_settled``, if set, is called once the exporter is done with the
    payload for good: delivered, or given up on (a permanent error, retries
    exhausted).  Not when shutdown leaves it undelivered: a durable store then
    keeps its spans for the next start."""

    data: bytes
    span_count: int
    trace_count: int = 0
    on_settled: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def settled(self) -> None:
        if self.on_settled is not None:
            self.on_settled()
