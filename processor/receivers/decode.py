"""Turn an OTLP export request into a columnar SpanBatch for the store.

This is the receivers' hot path, shared by gRPC and HTTP.  It keeps what the
store keeps: ids, parent, name, kind, times, status, the service name, each
span's bytes exactly as received and its resource and scope "heads"
(``processor.otlp.wire.group_head``) exactly as received.  No attribute
becomes a Python object here: the attributes analysis reads are decoded from
the bytes when the trace is released (``processor.analysis.attributes``), in
the analysis process.

Everything the exporters will send again is checked first: the request is
parsed whole with the OTLP classes, every resource, scope and span as what
it claims to be (nested attribute values too), at the depth a downstream
parses the payloads framed from it.  A request that does not parse is
refused whole, naming the first part that does not (``MalformedRequest``);
nothing of it is stored.  Spans with invalid ids (their own or their links')
are rejected one by one; the rest go on.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.model import DecodedRequest, SpanBatch
from processor.otlp.views import request_view, span_presence_view
from processor.otlp.wire import (
    REQUEST_RESOURCE_SPANS,
    RESOURCE_SPANS_SCOPE_SPANS,
    SCOPE_SPANS_SPANS,
    group_head,
    length_delimited,
)
from processor.store import STORE_SCHEMA

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MAX_INT64 = 2**63 - 1


class MalformedRequest(ValueError):
    """The request as a whole cannot be decoded (maps to INVALID_ARGUMENT / 400)."""


def parse_protobuf(data: bytes) -> Any:
    """A request body as a ``RequestView`` (resources, scopes and spans as their bytes);
    MalformedRequest if its framing is not a request's."""
    try:
        return request_view().FromString(data)
    except DecodeError as err:
        raise MalformedRequest(f"cannot decode the body as an OTLP ExportTraceServiceRequest: {err}") from None


def group_id(head: bytes) -> int:
    """Stable 63-bit id of an encoded resource or scope head (dedupes groups)."""
    return int.from_bytes(hashlib.blake2b(head, digest_size=8).digest(), "little") >> 1


def decode(request: bytes | ExportTraceServiceRequest) -> DecodedRequest:
    """Check and flatten a request into a SpanBatch; spans with invalid ids are rejected individually.

    ``request`` is an encoded ExportTraceServiceRequest or such a message.
    The batch has the store's columns (``store.STORE_SCHEMA``); the
    attributes analysis reads are decoded when traces are released
    (``processor.analysis.attributes``).  MalformedRequest if any of it does
    not parse as what it claims to be.
    """
    data = request.SerializeToString() if isinstance(request, ExportTraceServiceRequest) else request
    try:
        # The OTLP classes check all of it; the view hands over the same parts as their bytes.
        whole = ExportTraceServiceRequest.FromString(data)
    except DecodeError as err:
        raise MalformedRequest(_problem(data, err)) from None
    return _decode(whole, parse_protobuf(data))


def _decode(whole: ExportTraceServiceRequest, frames: Any) -> DecodedRequest:
    """The request's spans column by column, a list comprehension per field and group and one
    Arrow call per column; requests with links or an invalid id are decoded span by span
    (``_decode_span_by_span``: which spans are rejected, and why)."""
    # Each group's spans as their bytes, and whether any of them has links (rare: only then is
    # each span's links list read) or a status (else none is read, see _presence).
    groups = [list(ss_frame.spans) for rs_frame in frames.resource_spans for ss_frame in rs_frame.scope_spans]
    raws = pa.array(list(chain.from_iterable(groups)), pa.binary())
    present = _presence(raws)
    if present.links:
        return _decode_span_by_span(whole, frames, groups, linked=True)
    # Only when some status is not empty: a span's status is absent, or its occurrences merged,
    # so with every occurrence empty every span's is unset (OTel SDKs send an empty one for unset).
    occurrences = list(present.status)
    read_status = occurrences.count(b"") != len(occurrences)
    trace_ids: list[bytes] = []
    span_ids: list[bytes] = []
    parents: list[bytes] = []
    names: list[str] = []
    kinds: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    statuses: list[Any] = []
    resources: dict[int, bytes] = {}
    scopes: dict[int, bytes] = {}
    group_rows: list[tuple[str, int, int]] = []   # (service, resource id, scope id) of each group
    counts: list[int] = []                        # and its spans
    for service, rid, sid_group, group in _groups(whole, frames, resources, scopes):
        spans = list(group)
        trace_ids += [s.trace_id for s in spans]
        span_ids += [s.span_id for s in spans]
        parents += [s.parent_span_id for s in spans]
        names += [s.name for s in spans]
        kinds += [s.kind for s in spans]
        starts += [s.start_time_unix_nano for s in spans]
        ends += [s.end_time_unix_nano for s in spans]
        if read_status:
            statuses += [s.status if s.HasField("status") else None for s in spans]
        group_rows.append((service, rid, sid_group))
        counts.append(len(spans))
    trace_column, span_column = pa.array(trace_ids, pa.binary()), pa.array(span_ids, pa.binary())
    if not (_sized(trace_column, 16) and _sized(span_column, 8) and _ZERO_TRACE not in trace_ids
            and _ZERO_SPAN not in span_ids and set(map(len, parents)) <= {0, 8}):
        return _decode_span_by_span(whole, frames, groups, linked=False)

    n = len(trace_ids)
    if _ZERO_SPAN in parents:  # an all-zero parent means none
        parents = [p if p != _ZERO_SPAN else b"" for p in parents]
    if read_status:
        codes: pa.Array = _ints([0 if s is None else s.code for s in statuses], STORE_SCHEMA.field("status_code").type)
        messages = pa.array(["" if s is None else s.message for s in statuses], pa.string())
    else:
        codes = _ints(bytes(n), STORE_SCHEMA.field("status_code").type)
        messages = _empty_strings(n)
    services, rids, sids = zip(*group_rows) if group_rows else ((), (), ())
    columns = {
        "trace_id": trace_column,
        "span_id": span_column,
        "parent_span_id": pa.array([p or None for p in parents], pa.binary()),
        "service": pa.array(list(chain.from_iterable([s] * count for s, count in zip(services, counts))), pa.string()),
        "name": pa.array(names, pa.string()),
        "kind": _ints(kinds, STORE_SCHEMA.field("kind").type),
        "start_ns": _ints(starts, pa.int64()),
        "end_ns": _ints(ends, pa.int64()),
        "status_code": codes,
        "status_message": messages,
        "resource_id": _repeated_int64s(rids, counts),
        "scope_id": _repeated_int64s(sids, counts),
        "raw": raws,
    }
    table = pa.Table.from_arrays([columns[f.name] for f in STORE_SCHEMA], schema=STORE_SCHEMA)
    batch = SpanBatch(table=table, resources=resources, scopes=scopes, traces=dict(Counter(trace_ids)))
    return DecodedRequest(batch=batch)


def _groups(whole: ExportTraceServiceRequest, frames: Any, resources: dict[int, bytes],
            scopes: dict[int, bytes]) -> Iterator[tuple[str, int, int, Any]]:
    """Each scope group of the request in order: its service name, resource id and scope id,
    and its spans (as parsed whole); each group's resource and scope heads are recorded in
    ``resources`` and ``scopes`` by id."""
    for rs, rs_frame in zip(whole.resource_spans, frames.resource_spans):
        rhead = group_head(rs_frame.resource if rs_frame.HasField("resource") else None, rs_frame.schema_url)
        rid = group_id(rhead)
        resources[rid] = rhead
        service = _service_name(rs.resource)
        for ss, ss_frame in zip(rs.scope_spans, rs_frame.scope_spans):
            shead = group_head(ss_frame.scope if ss_frame.HasField("scope") else None, ss_frame.schema_url)
            sid = group_id(shead)
            scopes[sid] = shead
            yield service, rid, sid, ss.spans


def _sized(column: pa.Array, size: int) -> bool:
    """Whether every value of a binary column (as built: no offset) is ``size`` bytes long:
    its offsets are 0, size, 2 size…"""
    n = len(column)
    if size * (n + 1) >= 2**31:  # not the offsets of a column as built (int32)
        return False
    steps = _STEPS.get(size)
    if steps is None or steps.size < 4 * (n + 1):
        # kept for the largest request yet (any shorter one's offsets are its beginning), grown by doubling
        count = max(min(2 * n, 2**31 // size - 1), 1024)
        steps = _STEPS[size] = pa.py_buffer(array("i", range(0, size * count + 1, size)))
    return column.buffers()[1].slice(0, 4 * (n + 1)).equals(steps.slice(0, 4 * (n + 1)))


_STEPS: dict[int, pa.Buffer] = {}  # id size -> int32 offsets 0, size, 2 size… (``_sized``)


def _presence(raws: pa.Array) -> Any:
    """The links and status of spans (a binary column as built: their bytes concatenated in
    its data buffer), read as one message of those only (``otlp.views.span_presence_view``):
    whether any span has links, or a status.

    Not ``span.links`` or ``span.status`` for each span: reading an absent sub-message or an
    empty list of messages gives that span's Python object an arena of its own in protobuf
    (upb), freed with it, and upb calls ``malloc_trim(0)`` every 10,000 frees of its arenas'
    blocks: the receiving process trimmed malloc's arenas every 10,000 spans (6-7 times a
    second in ``faulttrace bench``), handing every free page back to the system, and took 0.5
    page faults a span (11% of its CPU, measured with perf).
    """
    if not len(raws):
        return span_presence_view()()
    _, offsets, data = raws.buffers()
    return span_presence_view().FromString(memoryview(data)[:memoryview(offsets).cast("i")[len(raws)]])


def _ints(values: Sequence[int] | bytes, type_: pa.DataType) -> pa.Array:
    """An integer column, packed by one C call (``bytes``, ``array``) when every value fits
    its type; else ``_column`` (values out of range)."""
    n = len(values)
    try:
        if pa.types.is_uint8(type_):
            data: Any = values if isinstance(values, bytes) else bytes(values)
        elif pa.types.is_int64(type_):
            data = array("q", values)
        else:
            return _column(values, type_)
    except (ValueError, OverflowError):
        return _column(values, type_)
    return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(data)])


def _empty_strings(n: int) -> pa.Array:
    """A string column of ``n`` empty strings."""
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(bytes(4 * (n + 1))), pa.py_buffer(b"")])


def _repeated_int64s(values: Sequence[int], counts: list[int]) -> pa.Array:
    """``values[g]`` repeated ``counts[g]`` times, for each ``g`` in order (an int64 column)."""
    data = array("q")
    for value, count in zip(values, counts):
        data += array("q", [value]) * count
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def _decode_span_by_span(whole: ExportTraceServiceRequest, frames: Any, groups: list[list[bytes]],
                         linked: bool) -> DecodedRequest:
    """``_decode`` one span at a time, for requests with links (``linked``) or an invalid id:
    spans with invalid ids (their own or their links') are rejected, the first problem named."""
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
    group_raws = iter(groups)
    # Bound methods: this loop runs once per span, attribute lookups add up.
    add_trace, add_span, add_parent, add_name = trace_ids.append, span_ids.append, parents.append, names.append
    add_kind, add_start, add_end, add_code = kinds.append, starts.append, ends.append, codes.append
    add_message, add_raw = messages.append, raws.append

    for service, rid, sid_group, group in _groups(whole, frames, resources, scopes):
        before = len(raws)
        for span, raw in zip(group, next(group_raws)):
            tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
            if len(tid) != 16 or tid == _ZERO_TRACE or len(sid) != 8 or sid == _ZERO_SPAN or (
                    pid and len(pid) != 8) or (linked and span.links and _link_problem(span)):
                rejected += 1
                if not first_problem:
                    first_problem = _id_problem(span)
                continue
            add_trace(tid)
            add_span(sid)
            add_parent(pid if pid and pid != _ZERO_SPAN else None)
            add_name(span.name)
            add_kind(span.kind)
            add_start(span.start_time_unix_nano)
            add_end(span.end_time_unix_nano)
            if span.HasField("status"):  # an absent one is not read: see _presence
                status = span.status
                add_code(status.code)
                add_message(status.message)
            else:
                add_code(0)
                add_message("")
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


def _service_name(resource: Resource) -> str:
    """The resource's ``service.name`` string ("" if none); the last one if repeated."""
    service = ""
    for kv in resource.attributes:
        if kv.key == "service.name":
            service = kv.value.string_value
    return service


def _column(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=type_)
    except (OverflowError, pa.ArrowInvalid):
        # The rare value out of the column's range (the span's raw bytes keep the original):
        # kind and status code are open enums (int32) on the wire but UTINYINT columns, read
        # as 0 (unspecified, unset); span times are fixed64 but BIGINT columns, clamped.
        if pa.types.is_uint8(type_):
            return pa.array([v if 0 <= v <= 255 else 0 for v in values], type=type_)
        return pa.array([min(v, _MAX_INT64) for v in values], type=type_)


def _id_problem(span: Span) -> str:
    tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
    if len(tid) != 16:
        return f"trace_id must be 16 bytes, got {len(tid)}"
    if tid == _ZERO_TRACE:
        return "trace_id is all zeroes"
    if len(sid) != 8:
        return f"span_id must be 8 bytes, got {len(sid)}"
    if sid == _ZERO_SPAN:
        return "span_id is all zeroes"
    if pid and len(pid) != 8:
        return f"parent_span_id must be empty or 8 bytes, got {len(pid)}"
    return _link_problem(span)


def _link_problem(span: Span) -> str:
    """What is wrong with a link's ids, as OTLP receivers (the collector's among them) refuse
    them: an id is empty or of its full length; "" when nothing is."""
    for i, link in enumerate(span.links):
        if len(link.trace_id) not in (0, 16):
            return f"links[{i}].trace_id must be empty or 16 bytes, got {len(link.trace_id)}"
        if len(link.span_id) not in (0, 8):
            return f"links[{i}].span_id must be empty or 8 bytes, got {len(link.span_id)}"
    return ""


# --- naming what does not parse (only for refused requests) ---------------------------------


def _problem(data: bytes, err: DecodeError) -> str:
    """Which part of a request that does not parse is the first not to, and as what.

    Each resource, scope and span is parsed alone and then framed at its own
    place in a request: protobuf parsers limit nesting (100 levels here and in
    C++; counted from the request), so a part may parse alone and still be too
    deep where it stands.
    """
    try:
        frames = request_view().FromString(data)
    except DecodeError as frame_err:
        return f"cannot decode the body as an OTLP ExportTraceServiceRequest: {frame_err}"
    for i, rs in enumerate(frames.resource_spans):
        where = f"resource_spans[{i}]"
        if rs.HasField("resource"):
            found = _part_problem(f"{where}.resource", Resource, rs.resource,
                                  _request_with(resource=rs.resource))
            if found:
                return found
        for j, ss in enumerate(rs.scope_spans):
            if ss.HasField("scope"):
                found = _part_problem(f"{where}.scope_spans[{j}].scope", InstrumentationScope, ss.scope,
                                      _request_with(scope=ss.scope))
                if found:
                    return found
            for k, raw in enumerate(ss.spans):
                found = _part_problem(f"{where}.scope_spans[{j}].spans[{k}]", Span, raw, _request_with(span=raw))
                if found:
                    return found
    return f"cannot decode the body as an OTLP ExportTraceServiceRequest: {err}"


def _part_problem(where: str, kind: Any, raw: bytes, framed: bytes) -> str:
    """"" if ``raw`` parses as ``kind``, alone and framed in a request as it stood."""
    try:
        kind.FromString(raw)
    except DecodeError:
        return f"{where} is not a valid {kind.DESCRIPTOR.name} ({len(raw)} bytes that do not parse as one)"
    try:
        ExportTraceServiceRequest.FromString(framed)
    except DecodeError:
        return f"{where} is nested too deeply: protobuf parsers refuse more than 100 levels from the request"
    return ""


def _request_with(resource: bytes | None = None, scope: bytes | None = None, span: bytes | None = None) -> bytes:
    """A request holding just one resource, scope or span, at the depth it has in any request."""
    if resource is not None:
        return length_delimited(REQUEST_RESOURCE_SPANS, group_head(resource, ""))
    inner = group_head(scope, "") if scope is not None else length_delimited(SCOPE_SPANS_SPANS, span or b"")
    return length_delimited(REQUEST_RESOURCE_SPANS, length_delimited(RESOURCE_SPANS_SCOPE_SPANS, inner))
