"""Encode released spans as OTLP export requests, regrouped under their origin.

Spans are regrouped under their original resource and scope (the stored
heads) and framed into ``ExportTraceServiceRequest`` bytes directly, without
parsing or re-encoding a span.  Requests are cut at ``max_bytes`` so no
downstream's message limit (4 MiB by default in gRPC) is exceeded.  This runs
once per exported span, so the framing is written for speed: span bytes are
joined once, length prefixes come from a cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from processor.model import ExportPayload, ReleasedSpans
from processor.otlp.wire import (
    REQUEST_RESOURCE_SPANS,
    RESOURCE_SPANS_SCOPE_SPANS,
    SCOPE_SPANS_SPANS,
    length_delimited,
    tag,
    varint,
)

DEFAULT_MAX_BYTES = 3 * 1024 * 1024  # under gRPC's default 4 MiB receive limit
_SPAN_KEY = tag(SCOPE_SPANS_SPANS)
_cached_varint = lru_cache(maxsize=65536)(varint)


def encode_payloads(spans: ReleasedSpans, raw: list[bytes] | None = None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[ExportPayload]:
    """Export requests carrying every span of ``spans`` (``raw`` overrides its bytes, e.g. annotated)."""
    data = spans.raw if raw is None else raw
    groups: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(spans.resource_ids, spans.scope_ids)):
        rows = groups.get(key)
        if rows is None:
            groups[key] = [i]
        else:
            rows.append(i)
    # Fill requests group by group, cutting a group where a request is full.
    request: list[tuple[tuple[int, int], list[int]]] = []
    size = 0
    for key, rows in groups.items():
        # The group's resource and scope heads and their framing count too (a resource shared
        # by several groups is counted for each: a little conservative, never over the limit).
        heads = len(spans.resources[key[0]]) + len(spans.scopes[key[1]]) + 12
        size += heads
        start = 0
        for j, i in enumerate(rows):
            n = len(data[i]) + 6
            if size + n > max_bytes and (request or j > start):
                request.append((key, rows[start:j]))
                yield _encode(spans, data, request)
                request, size, start = [], heads, j
            size += n
        request.append((key, rows[start:]))
    if size:
        yield _encode(spans, data, request)


def _encode(spans: ReleasedSpans, data: list[bytes], groups: list[tuple[tuple[int, int], list[int]]]
            ) -> ExportPayload:
    by_resource: dict[int, list[bytes]] = {}
    count = 0
    traces: set[bytes] = set()
    for (rid, sid), rows in groups:
        if not rows:
            continue
        pieces = [spans.scopes[sid]]
        for i in rows:
            span = data[i]
            pieces += (_SPAN_KEY, _cached_varint(len(span)), span)
        traces.update(spans.trace_ids[i] for i in rows)
        count += len(rows)
        by_resource.setdefault(rid, []).append(b"".join(pieces))
    body = b"".join(
        length_delimited(REQUEST_RESOURCE_SPANS,
                         spans.resources[rid] + b"".join(length_delimited(RESOURCE_SPANS_SCOPE_SPANS, s)
                                                         for s in scope_spans))
        for rid, scope_spans in by_resource.items())
    return ExportPayload(data=body, span_count=count, trace_count=len(traces))
