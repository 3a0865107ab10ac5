"""Turn an OTLP export request into a columnar SpanBatch for the store.

This is the receivers' hot path, shared by gRPC and HTTP.  It touches only
what the store keeps: ids, parent, name, kind, times, status, the service
name, and each span's bytes exactly as received (``processor.otlp.views``).  No
attribute becomes a Python object here: the attributes analysis reads are
decoded from the bytes when the trace is released (``processor.analysis.attributes``),
in the analysis process.  Every span is still parsed whole, so a malformed
one is refused now, not found later.  Spans with invalid ids are rejected one
by one; the rest go on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.model import DecodedRequest, SpanBatch
from processor.otlp.views import request_view, resource_view, span_view
from processor.otlp.wire import length_delimited
from processor.store import STORE_SCHEMA

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MAX_INT64 = 2**63 - 1


class MalformedRequest(ValueError):
    """The request as a whole cannot be decoded (maps to INVALID_ARGUMENT / 400)."""


def parse_protobuf(data: bytes) -> Any:
    """A request body as a ``RequestView`` (spans still bytes); MalformedRequest if it is not one."""
    try:
        return request_view().FromString(data)
    except DecodeError as err:
        raise MalformedRequest(f"cannot decode the body as an OTLP ExportTraceServiceRequest: {err}") from None


def group_id(head: bytes) -> int:
    """Stable 63-bit id of an encoded resource or scope head (dedupes groups)."""
    return int.from_bytes(hashlib.blake2b(head, digest_size=8).digest(), "little") >> 1


def _head(field_bytes: bytes | None, schema_url: str) -> bytes:
    """Encoded fields 1 and 3 of a ResourceSpans/ScopeSpans: its resource/scope bytes, schema_url."""
    head = b"" if field_bytes is None else length_delimited(1, field_bytes)
    return head + (length_delimited(3, schema_url.encode()) if schema_url else b"")


def decode(request: bytes | ExportTraceServiceRequest | Any) -> DecodedRequest:
    """Flatten a request into a SpanBatch; spans with invalid ids are rejected individually.

    ``request`` is an encoded ExportTraceServiceRequest, such a message, or
    the ``RequestView`` that ``parse_protobuf`` returned.  The batch has the
    store's columns (``store.STORE_SCHEMA``); the attributes analysis reads
    are decoded when traces are released (``processor.analysis.attributes``).
    """
    if isinstance(request, ExportTraceServiceRequest):
        request = request.SerializeToString()
    req = parse_protobuf(request) if isinstance(request, bytes) else request
    try:
        decoded = _decode(req)
    except DecodeError as err:
        raise MalformedRequest(f"cannot decode a span of the request: {err}") from None
    return decoded


def _decode(req: Any) -> DecodedRequest:
    trace_ids: list[bytes] = []
    span_ids: list[bytes] = []
    parents: list[bytes | None] = []
    services: list[str] = []
    names: list[str] = []
    kinds: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    codes: list[int] = []
    messages: list[str] = []
    resource_ids: list[int] = []
    scope_ids: list[int] = []
    raws: list[bytes] = []
    resources: dict[int, bytes] = {}
    scopes: dict[int, bytes] = {}
    rejected = 0
    first_problem = ""
    # Bound methods: this loop runs once per span, attribute lookups add up.
    add_trace, add_span, add_parent, add_name = trace_ids.append, span_ids.append, parents.append, names.append
    add_kind, add_start, add_end, add_code = kinds.append, starts.append, ends.append, codes.append
    add_message, add_raw = messages.append, raws.append

    parse_span = span_view().FromString
    parse_resource = resource_view().FromString
    for rs in req.resource_spans:
        resource = rs.resource if rs.HasField("resource") else None
        rhead = _head(resource, rs.schema_url)
        rid = group_id(rhead)
        resources[rid] = rhead
        attrs = parse_resource(resource or b"").attributes
        name_value = attrs.get("service.name")
        service = name_value.string_value if name_value is not None else ""
        for ss in rs.scope_spans:
            shead = _head(ss.scope if ss.HasField("scope") else None, ss.schema_url)
            sid_group = group_id(shead)
            scopes[sid_group] = shead
            before = len(raws)
            for raw in ss.spans:
                span = parse_span(raw)
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                if len(tid) != 16 or tid == _ZERO_TRACE or len(sid) != 8 or sid == _ZERO_SPAN or (
                        pid and len(pid) != 8):
                    rejected += 1
                    if not first_problem:
                        first_problem = _id_problem(tid, sid, pid)
                    continue
                add_trace(tid)
                add_span(sid)
                add_parent(pid if pid and pid != _ZERO_SPAN else None)
                add_name(span.name)
                add_kind(span.kind)
                add_start(span.start_time_unix_nano)
                add_end(span.end_time_unix_nano)
                status = span.status
                add_code(status.code)
                add_message(status.message)
                add_raw(raw)
            # Per-group columns are filled at C speed, not once per span.
            n = len(raws) - before
            services.extend([service] * n)
            resource_ids.extend([rid] * n)
            scope_ids.extend([sid_group] * n)

    columns = [trace_ids, span_ids, parents, services, names, kinds, starts, ends, codes, messages,
               resource_ids, scope_ids, raws]
    table = pa.Table.from_arrays([_column(c, f.type) for c, f in zip(columns, STORE_SCHEMA)], schema=STORE_SCHEMA)
    message = ""
    if rejected:
        message = f"{rejected} span(s) rejected: {first_problem}"
    batch = SpanBatch(table=table, resources=resources, scopes=scopes, traces=dict(Counter(trace_ids)))
    return DecodedRequest(batch=batch, rejected_spans=rejected, error_message=message)


def _column(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=type_)
    except OverflowError:
        # Span times are fixed64 on the wire but BIGINT columns: clamp the rare
        # out-of-range value (the span's raw bytes keep the original).
        return pa.array([min(v, _MAX_INT64) for v in values], type=type_)


def _id_problem(tid: bytes, sid: bytes, pid: bytes) -> str:
    if len(tid) != 16:
        return f"trace_id must be 16 bytes, got {len(tid)}"
    if tid == _ZERO_TRACE:
        return "trace_id is all zeroes"
    if len(sid) != 8:
        return f"span_id must be 8 bytes, got {len(sid)}"
    if sid == _ZERO_SPAN:
        return "span_id is all zeroes"
    return f"parent_span_id must be empty or 8 bytes, got {len(pid)}"
