"""Encode released spans as OTLP export requests, regrouped under their origin.

Spans are regrouped under their original resource and scope (the stored
heads) and framed into ``ExportTraceServiceRequest`` bytes directly, without
parsing or re-encoding a span.  Requests are cut at ``max_bytes`` so no
downstream's message limit (4 MiB by default in gRPC) is exceeded.
"""

from __future__ import annotations

from collections.abc import Iterator

from processor.model import ExportPayload, ReleasedSpans
from processor.wire import (
    REQUEST_RESOURCE_SPANS,
    RESOURCE_SPANS_SCOPE_SPANS,
    SCOPE_SPANS_SPANS,
    repeated,
)

DEFAULT_MAX_BYTES = 3 * 1024 * 1024  # under gRPC's default 4 MiB receive limit


def encode_payloads(spans: ReleasedSpans, raw: list[bytes] | None = None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[ExportPayload]:
    """Export requests carrying every span of ``spans`` (``raw`` overrides its bytes, e.g. annotated)."""
    data = spans.raw if raw is None else raw
    if not data:
        return
    order = sorted(range(len(data)), key=lambda i: (spans.resource_ids[i], spans.scope_ids[i]))
    chunk: list[int] = []
    size = 0
    for i in order:
        n = len(data[i]) + 8
        if chunk and size + n > max_bytes:
            yield _encode(spans, data, chunk)
            chunk, size = [], 0
        chunk.append(i)
        size += n
    if chunk:
        yield _encode(spans, data, chunk)


def _encode(spans: ReleasedSpans, data: list[bytes], rows: list[int]) -> ExportPayload:
    """One request from rows already sorted by (resource, scope)."""
    resource_spans: list[bytes] = []
    scope_spans: list[bytes] = []
    span_run: list[bytes] = []
    rid = sid = None
    for i in rows:
        r, s = spans.resource_ids[i], spans.scope_ids[i]
        if (r, s) != (rid, sid) and span_run:
            scope_spans.append(spans.scopes[sid] + repeated(SCOPE_SPANS_SPANS, span_run))
            span_run = []
        if r != rid and scope_spans:
            resource_spans.append(spans.resources[rid] + repeated(RESOURCE_SPANS_SCOPE_SPANS, scope_spans))
            scope_spans = []
        rid, sid = r, s
        span_run.append(data[i])
    scope_spans.append(spans.scopes[sid] + repeated(SCOPE_SPANS_SPANS, span_run))
    resource_spans.append(spans.resources[rid] + repeated(RESOURCE_SPANS_SCOPE_SPANS, scope_spans))
    traces = len({spans.trace_ids[i] for i in rows})
    return ExportPayload(data=repeated(REQUEST_RESOURCE_SPANS, resource_spans), span_count=len(rows),
                         trace_count=traces)


__all__ = ["DEFAULT_MAX_BYTES", "encode_payloads"]
