"""Encode released spans as OTLP export requests, regrouped under their origin.

Spans are regrouped under their original resource and scope (the stored
heads) and framed into ``ExportTraceServiceRequest`` bytes directly, without
parsing or re-encoding a span.  Requests are cut at ``max_bytes`` so no
downstream's message limit (4 MiB by default in gRPC) is exceeded.  This runs
once per exported span, so the framing is written for speed: span bytes are
joined once, length prefixes come from a cache.

A payload the downstream refuses is cut in halves here (``split_payload``)
and framed again the same way, so an exporter can deliver every part the
downstream takes and drop only what it refuses alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.model import ExportPayload, ReleasedSpans
from processor.otlp.views import request_view
from processor.otlp.wire import (
    REQUEST_RESOURCE_SPANS,
    RESOURCE_SPANS_SCOPE_SPANS,
    SCOPE_SPANS_SPANS,
    group_head,
    length_delimited,
    tag,
    varint,
)

DEFAULT_MAX_BYTES = 3 * 1024 * 1024  # under gRPC's default 4 MiB receive limit
_SPAN_KEY = tag(SCOPE_SPANS_SPANS)
_cached_varint = lru_cache(maxsize=65536)(varint)


def scope_groups(spans: ReleasedSpans) -> dict[tuple[int, int], list[int]]:
    """The rows of each (resource, scope), in the order each first appears, a group's rows in
    order: the order ``encode_payloads`` fills payloads in (``settlement.with_keys`` relies on it)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(spans.resource_ids, spans.scope_ids)):
        rows = groups.get(key)
        if rows is None:
            groups[key] = [i]
        else:
            rows.append(i)
    return groups


def encode_payloads(spans: ReleasedSpans, raw: list[bytes] | None = None,
                    max_bytes: int = DEFAULT_MAX_BYTES, max_spans: int = 0) -> Iterator[ExportPayload]:
    """Export requests carrying every span of ``spans`` (``raw`` overrides its bytes, e.g. annotated),
    each at most ``max_bytes`` and, unless 0, ``max_spans`` spans (the batch processor's send_batch_max_size)."""
    data = spans.raw if raw is None else raw
    groups = scope_groups(spans)
    # Fill requests group by group, cutting a group where a request is full.
    request: list[tuple[tuple[int, int], list[int]]] = []
    size = count = 0
    for key, rows in groups.items():
        # The group's resource and scope heads and their framing count too (a resource shared
        # by several groups is counted for each: a little conservative, never over the limit).
        heads = len(spans.resources[key[0]]) + len(spans.scopes[key[1]]) + 12
        size += heads
        start = 0
        for j, i in enumerate(rows):
            n = len(data[i]) + 6
            full = size + n > max_bytes or (max_spans and count == max_spans)
            if full and (request or j > start):
                request.append((key, rows[start:j]))
                yield _encode(spans, data, request)
                request, size, count, start = [], heads, 0, j
            size += n
            count += 1
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
        by_resource.setdefault(rid, []).append(_scope_spans(spans.scopes[sid], map(data.__getitem__, rows)))
        traces.update(spans.trace_ids[i] for i in rows)
        count += len(rows)
    body = _request((spans.resources[rid], scope_spans) for rid, scope_spans in by_resource.items())
    return ExportPayload(data=body, span_count=count, trace_count=len(traces))


def _scope_spans(head: bytes, spans: Iterable[bytes]) -> bytes:
    """One ScopeSpans: the scope head, then each span as a field 2."""
    pieces = [head]
    for span in spans:
        pieces += (_SPAN_KEY, _cached_varint(len(span)), span)
    return b"".join(pieces)


def _request(resources: Iterable[tuple[bytes, list[bytes]]]) -> bytes:
    """An ExportTraceServiceRequest: one ResourceSpans per (resource head, its encoded ScopeSpans)."""
    return b"".join(
        length_delimited(REQUEST_RESOURCE_SPANS,
                         head + b"".join(length_delimited(RESOURCE_SPANS_SCOPE_SPANS, s) for s in scope_spans))
        for head, scope_spans in resources)


# --- splitting a refused payload ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Group:
    """Spans under one resource and scope, as framed: the two heads and each span's bytes."""

    resource: bytes
    scope: bytes
    spans: list[bytes]


def _groups(data: bytes) -> list[_Group] | None:
    """The non-empty groups of an encoded request, heads and spans as their bytes; None if it is not one."""
    try:
        req = request_view().FromString(data)
    except DecodeError:
        return None
    return [_Group(group_head(rs.resource if rs.HasField("resource") else None, rs.schema_url),
                   group_head(ss.scope if ss.HasField("scope") else None, ss.schema_url), list(ss.spans))
            for rs in req.resource_spans for ss in rs.scope_spans if ss.spans]


def _framed(groups: list[_Group]) -> ExportPayload:
    by_resource: dict[bytes, list[bytes]] = {}
    for g in groups:
        by_resource.setdefault(g.resource, []).append(_scope_spans(g.scope, g.spans))
    return ExportPayload(data=_request(by_resource.items()), span_count=sum(len(g.spans) for g in groups))


def split_payload(payload: ExportPayload) -> list[ExportPayload]:
    """``payload`` in two halves, cut between resources, else between scopes, else between spans.

    Each half is framed like any payload (its own copy of the heads its spans
    need) and carries no ``on_settled`` (settling is the whole payload's) nor
    a ``trace_count``.
    Empty when there is nothing to cut: a single span, or bytes that are not
    the request framing of ``payload.span_count`` spans.
    """
    groups = _groups(payload.data)
    if groups is None or payload.span_count < 2 or sum(len(g.spans) for g in groups) != payload.span_count:
        return []
    resources = list(dict.fromkeys(g.resource for g in groups))
    if len(resources) > 1:
        first = set(resources[:len(resources) // 2])
        halves = [[g for g in groups if g.resource in first], [g for g in groups if g.resource not in first]]
    elif len(groups) > 1:
        halves = [groups[:len(groups) // 2], groups[len(groups) // 2:]]
    else:
        (g,) = groups
        mid = len(g.spans) // 2
        halves = [[_Group(g.resource, g.scope, g.spans[:mid])], [_Group(g.resource, g.scope, g.spans[mid:])]]
    return [_framed(half) for half in halves]


def span_ids(payload: ExportPayload) -> list[tuple[bytes, bytes] | None]:
    """(trace id, span id) of each span of ``payload``, None for one that does not decode: for messages."""
    out: list[tuple[bytes, bytes] | None] = []
    for group in _groups(payload.data) or ():
        for raw in group.spans:
            try:
                span = Span.FromString(raw)
            except DecodeError:
                out.append(None)
            else:
                out.append((span.trace_id, span.span_id))
    return out
