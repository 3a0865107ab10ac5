"""Typed values passed between pipeline stages.

receiver --DecodedRequest(SpanBatch)--> store --ReleasedSpans--> release
(analysis reads ``ReleasedSpans.table``; the verdict types are in
``analysis.verdict``) --> annotator --ExportPayload--> exporters.  Nothing
between stages is a loose dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


@dataclass(slots=True)
class SpanBatch:
    """The spans of one request, columnar, ready for the store.

    ``table`` has the store's columns (``store.STORE_SCHEMA``: ``dsl.SPAN_COLUMNS``,
    ``resource_id``, ``scope_id``, ``raw``; no attributes).  ``resources`` and
    ``scopes`` map group ids to their encoded heads (``receivers.decode``).
    ``traces`` counts spans per trace id, for the assembler and the store's index of traces.
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


# The columns of ``ReleasedSpans.table`` the export path reads (the store hands back all of ``store.STORE_SCHEMA``).
RELEASED_COLUMNS: dict[str, pa.DataType] = {
    "trace_id": pa.binary(), "span_id": pa.binary(), "parent_span_id": pa.binary(),
    "resource_id": pa.int64(), "scope_id": pa.int64(), "raw": pa.binary(),
}


@dataclass(frozen=True, slots=True)
class ReleasedSpans:
    """Spans leaving the store: ``table``, the rows as the store kept them (``store.STORE_SCHEMA``,
    read by analysis; at least ``RELEASED_COLUMNS``), and the resource and scope heads they refer to.

    The rows stay Arrow columns on their way out (annotated, framed into payloads: ``annotator``,
    ``otlp.payload``): as Python objects a span's bytes and ids took ~790 B more per released span
    (measured, docs/sizing.md).  The list properties build Python lists on each call, for the
    few readers that want them (the verdict observer's trace ids, tests)."""

    table: pa.Table
    resources: dict[int, bytes]
    scopes: dict[int, bytes]
    trace_count: int

    @property
    def span_count(self) -> int:
        return self.table.num_rows

    def _list(self, name: str) -> list[Any]:
        return self.table.column(name).to_pylist()

    @property
    def trace_ids(self) -> list[bytes]:
        return self._list("trace_id")

    @property
    def span_ids(self) -> list[bytes]:
        return self._list("span_id")

    @property
    def parent_span_ids(self) -> list[bytes | None]:
        return self._list("parent_span_id")

    @property
    def raw(self) -> list[bytes]:
        return self._list("raw")

    @property
    def resource_ids(self) -> list[int]:
        return self._list("resource_id")

    @property
    def scope_ids(self) -> list[int]:
        return self._list("scope_id")


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
