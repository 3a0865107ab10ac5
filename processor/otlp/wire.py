"""Protobuf wire-format building blocks for OTLP trace payloads.

Export requests are assembled from stored bytes without re-encoding spans:
a message is the concatenation of its encoded fields, and repeated fields may
appear anywhere, so a ResourceSpans is its resource "head" (fields 1 and 3)
followed by one length-delimited field 2 per ScopeSpans, and so on.
"""

from __future__ import annotations

# Field numbers, from opentelemetry/proto/trace/v1/trace.proto.
REQUEST_RESOURCE_SPANS = 1   # ExportTraceServiceRequest.resource_spans
GROUP_HEAD = 1               # ResourceSpans.resource, ScopeSpans.scope
GROUP_SCHEMA_URL = 3         # ResourceSpans.schema_url, ScopeSpans.schema_url
RESOURCE_SPANS_SCOPE_SPANS = 2  # ResourceSpans.scope_spans
SCOPE_SPANS_SPANS = 2        # ScopeSpans.spans
SPAN_ATTRIBUTES = 9          # Span.attributes (repeated KeyValue)
SPAN_EVENTS = 11             # Span.events (repeated Span.Event)
SPAN_LINKS = 13              # Span.links (repeated Span.Link)

_SMALL_VARINTS = [bytes([i]) for i in range(128)]


def varint(value: int) -> bytes:
    """Base-128 varint of a non-negative int."""
    if value < 128:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``data[at:]`` and where it ends; IndexError when it runs off the end."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def tag(field: int) -> bytes:
    """Key of a length-delimited field (wire type 2)."""
    return varint(field << 3 | 2)


def length_delimited(field: int, payload: bytes) -> bytes:
    """One encoded length-delimited field: key, length, payload."""
    return tag(field) + varint(len(payload)) + payload


def group_head(message: bytes | None, schema_url: str) -> bytes:
    """The "head" of a ResourceSpans or ScopeSpans: its encoded resource or scope (None: absent)
    and schema_url, fields 1 and 3; the group's spans follow it as fields 2."""
    head = b"" if message is None else length_delimited(GROUP_HEAD, message)
    return head + (length_delimited(GROUP_SCHEMA_URL, schema_url.encode()) if schema_url else b"")
