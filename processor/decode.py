"""Turn an OTLP export request into a columnar SpanBatch for the store.

This is the receivers' hot path, shared by gRPC and HTTP.  It touches only
what the store keeps: ids, parent, name, kind, times, status, the service
name, the attributes the rule set projects (``dsl.AttrRef``), and each span's
bytes exactly as received (``processor.views``).  Attributes nobody projects
are never turned into Python objects (doing so for every attribute caps the
pipeline at a fraction of its speed): the parser builds a map per span and
projecting is a lookup.  Spans with invalid ids are rejected one by one; the
rest go on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dsl import SPAN_COLUMNS, AttrRef, AttrSource, AttrType, column_name
from processor.model import DecodedRequest, SpanBatch
from processor.views import request_view, resource_view, span_view
from processor.wire import length_delimited

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MAX_INT64 = 2**63 - 1
_ARROW_TYPES: dict[str, pa.DataType] = {
    "BLOB": pa.binary(),
    "VARCHAR": pa.string(),
    "UTINYINT": pa.uint8(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR[]": pa.list_(pa.string()),
    "BIGINT[]": pa.list_(pa.int64()),
    "DOUBLE[]": pa.list_(pa.float64()),
}
# Columns after the intrinsics and projections: where the span came from and its bytes.
STORAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("resource_id", "BIGINT"),
    ("scope_id", "BIGINT"),
    ("raw", "BLOB"),
)


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


def _convert(value: Any, kind: AttrType) -> Any:
    """An AnyValue as the Python value of a column of type ``kind``, or None (nil)."""
    which = value.WhichOneof("value")
    if kind is AttrType.STRING:
        return value.string_value if which == "string_value" else None
    if kind is AttrType.INT:
        return value.int_value if which == "int_value" else None
    if kind is AttrType.DOUBLE:
        if which == "double_value":
            return value.double_value
        return float(value.int_value) if which == "int_value" else None
    if kind is AttrType.BOOL:
        return value.bool_value if which == "bool_value" else None
    if which != "array_value":
        return None
    items = value.array_value.values
    element = {AttrType.STRING_ARRAY: AttrType.STRING, AttrType.INT_ARRAY: AttrType.INT,
               AttrType.DOUBLE_ARRAY: AttrType.DOUBLE}[kind]
    out = [_convert(v, element) for v in items]
    return None if any(v is None for v in out) else out


def _lookup(attributes: Any, refs: dict[str, list[tuple[int, AttrType]]], row: list[Any]) -> None:
    """Fill ``row`` slots for the projected keys present in a map-shaped ``attributes``."""
    for key, targets in refs.items():
        value = attributes.get(key)
        if value is not None:
            for slot, kind in targets:
                row[slot] = _convert(value, kind)


@dataclass(frozen=True, slots=True)
class Projection:
    """The attribute columns of the span table, precompiled for decoding."""

    refs: tuple[AttrRef, ...]
    span_keys: dict[str, list[tuple[int, AttrType]]]
    resource_keys: dict[str, list[tuple[int, AttrType]]]
    event_refs: dict[str, list[tuple[int, AttrRef]]]  # event name -> slots
    schema: pa.Schema
    # Byte strings whose absence from a span's encoding proves it carries no
    # projected span attribute / no projected event: a C-speed substring test
    # that spares the (costly) walk over the span's attributes in Python.
    span_needles: tuple[bytes, ...] = ()
    event_needles: tuple[bytes, ...] = ()
    present_slots: tuple[int, ...] = ()

    @classmethod
    def of(cls, refs: Iterable[AttrRef]) -> Projection:
        ordered = tuple(sorted(set(refs)))
        span_keys: dict[str, list[tuple[int, AttrType]]] = {}
        resource_keys: dict[str, list[tuple[int, AttrType]]] = {}
        event_refs: dict[str, list[tuple[int, AttrRef]]] = {}
        for slot, ref in enumerate(ordered):
            if ref.source is AttrSource.SPAN:
                span_keys.setdefault(ref.key, []).append((slot, ref.type))
            elif ref.source is AttrSource.RESOURCE:
                resource_keys.setdefault(ref.key, []).append((slot, ref.type))
            else:
                event_refs.setdefault(ref.event, []).append((slot, ref))
        fields = [pa.field(name, _ARROW_TYPES[sql]) for name, sql in SPAN_COLUMNS]
        fields += [pa.field(column_name(r), _ARROW_TYPES[r.type.sql_type]) for r in ordered]
        fields += [pa.field(name, _ARROW_TYPES[sql]) for name, sql in STORAGE_COLUMNS]
        present = tuple(slot for slots in event_refs.values() for slot, ref in slots
                        if ref.type is AttrType.PRESENT)
        return cls(ordered, span_keys, resource_keys, event_refs, pa.schema(fields),
                   span_needles=tuple(k.encode() for k in span_keys),
                   event_needles=tuple(e.encode() for e in event_refs), present_slots=present)

    def columns_sql(self) -> list[tuple[str, str]]:
        """(name, DuckDB type) of every span-table column, in table order."""
        return ([*SPAN_COLUMNS] + [(column_name(r), r.type.sql_type) for r in self.refs]
                + [*STORAGE_COLUMNS])


def _head(field_bytes: bytes | None, schema_url: str) -> bytes:
    """Encoded fields 1 and 3 of a ResourceSpans/ScopeSpans: its resource/scope bytes, schema_url."""
    head = b"" if field_bytes is None else length_delimited(1, field_bytes)
    return head + (length_delimited(3, schema_url.encode()) if schema_url else b"")


def _event_values(span: Any, events: dict[str, list[tuple[int, AttrRef]]], row: list[Any]) -> None:
    seen: set[str] = set()
    for ev in span.events:
        slots = events.get(ev.name)
        if slots is None or ev.name in seen:
            continue
        seen.add(ev.name)  # the first event of a name is the one projected
        for slot, ref in slots:
            if ref.type is AttrType.PRESENT:
                row[slot] = True
            else:
                value = ev.attributes.get(ref.key)
                if value is not None:
                    row[slot] = _convert(value, ref.type)


def decode(request: bytes | ExportTraceServiceRequest | Any, projection: Projection) -> DecodedRequest:
    """Flatten a request into a SpanBatch; spans with invalid ids are rejected individually.

    ``request`` is an encoded ExportTraceServiceRequest, such a message, or
    the ``RequestView`` that ``parse_protobuf`` returned.
    """
    if isinstance(request, ExportTraceServiceRequest):
        request = request.SerializeToString()
    req = parse_protobuf(request) if isinstance(request, bytes) else request
    try:
        return _decode(req, projection)
    except DecodeError as err:
        raise MalformedRequest(f"cannot decode a span of the request: {err}") from None


def _decode(req: Any, projection: Projection) -> DecodedRequest:
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
    width = len(projection.refs)
    attr_rows: list[list[Any]] = []
    resources: dict[int, bytes] = {}
    scopes: dict[int, bytes] = {}
    rejected = 0
    first_problem = ""
    span_keys, event_refs = projection.span_keys, projection.event_refs
    span_needles, event_needles = projection.span_needles, projection.event_needles
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
        base_row: list[Any] = [None] * width
        for slot in projection.present_slots:
            base_row[slot] = False
        if projection.resource_keys:
            _lookup(attrs, projection.resource_keys, base_row)
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
                if width:
                    row = base_row.copy()
                    if span_keys and any(n in raw for n in span_needles):
                        _lookup(span.attributes, span_keys, row)
                    if event_refs and any(n in raw for n in event_needles):
                        _event_values(span, event_refs, row)
                    attr_rows.append(row)
            # Per-group columns are filled at C speed, not once per span.
            n = len(raws) - before
            services.extend([service] * n)
            resource_ids.extend([rid] * n)
            scope_ids.extend([sid_group] * n)

    columns: list[Sequence[Any]] = [trace_ids, span_ids, parents, services, names, kinds, starts, ends,
                                    codes, messages]
    if width:
        columns += [list(col) for col in zip(*attr_rows)] if attr_rows else [[] for _ in range(width)]
    columns += [resource_ids, scope_ids, raws]
    table = pa.Table.from_arrays([_column(c, f.type) for c, f in zip(columns, projection.schema)],
                                 schema=projection.schema)
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
