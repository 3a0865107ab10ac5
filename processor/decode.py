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


def _array(element: AttrType) -> Any:
    def convert(value: Any) -> Any:
        out = [_convert(v, element) for v in value.array_value.values]
        return None if any(v is None for v in out) else out
    return convert


# (column type, AnyValue's set field) -> the value for the column.  Pairs not
# listed are nil: a value of another type never matches (nil-safe).
_CONVERTERS: dict[tuple[AttrType, str | None], Any] = {
    (AttrType.STRING, "string_value"): lambda v: v.string_value,
    (AttrType.INT, "int_value"): lambda v: v.int_value,
    (AttrType.DOUBLE, "double_value"): lambda v: v.double_value,
    (AttrType.DOUBLE, "int_value"): lambda v: float(v.int_value),
    (AttrType.BOOL, "bool_value"): lambda v: v.bool_value,
    (AttrType.STRING_ARRAY, "array_value"): _array(AttrType.STRING),
    (AttrType.INT_ARRAY, "array_value"): _array(AttrType.INT),
    (AttrType.DOUBLE_ARRAY, "array_value"): _array(AttrType.DOUBLE),
}


def _convert(value: Any, kind: AttrType) -> Any:
    """An AnyValue as the Python value of a column of type ``kind``, or None (nil)."""
    convert = _CONVERTERS.get((kind, value.WhichOneof("value")))
    return None if convert is None else convert(value)


class _Columns:
    """Projected attribute columns, filled sparsely: most projected keys are absent from most spans."""

    def __init__(self, projection: Projection) -> None:
        self._present = set(projection.present_slots)
        self.values: list[list[tuple[int, Any]]] = [[] for _ in projection.refs]  # slot -> (row, value)
        self.fills: list[tuple[int, int, int, Any]] = []  # resource values: (slot, first row, end row, value)

    def lookup(self, attributes: Any, refs: dict[str, list[tuple[int, AttrType]]], row: int) -> None:
        """Record the projected keys present in a map-shaped ``attributes`` for ``row``."""
        # Set intersection in C: only keys both projected and present cost Python work.
        for key in refs.keys() & list(attributes):  # list(): C iteration; .keys() iterates in Python
            value = attributes[key]
            for slot, kind in refs[key]:
                converted = _convert(value, kind)
                if converted is not None:
                    self.values[slot].append((row, converted))

    def build(self, rows: int, types: Sequence[pa.DataType]) -> list[pa.Array]:
        filled: dict[int, list[tuple[int, int, Any]]] = {}
        for slot, start, end, value in self.fills:
            filled.setdefault(slot, []).append((start, end, value))
        out = []
        for slot, (values, type_) in enumerate(zip(self.values, types)):
            default = False if slot in self._present else None
            if not values and slot not in filled:
                # The common case: no span of the request has this attribute.
                out.append(pa.nulls(rows, type_) if default is None else pa.repeat(default, rows))
                continue
            col: list[Any] = [default] * rows
            for i, v in values:
                col[i] = v
            for start, end, value in filled.get(slot, ()):
                col[start:end] = [value] * (end - start)
            out.append(_column(col, type_))
        return out


@dataclass(frozen=True, slots=True)
class Projection:
    """The attribute columns of the span table, precompiled for decoding."""

    refs: tuple[AttrRef, ...]
    span_keys: dict[str, list[tuple[int, AttrType]]]
    resource_keys: dict[str, list[tuple[int, AttrType]]]
    event_refs: dict[str, list[tuple[int, AttrRef]]]  # event name -> slots
    schema: pa.Schema
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
                   present_slots=present)

    def columns_sql(self) -> list[tuple[str, str]]:
        """(name, DuckDB type) of every span-table column, in table order."""
        return ([*SPAN_COLUMNS] + [(column_name(r), r.type.sql_type) for r in self.refs]
                + [*STORAGE_COLUMNS])


def _head(field_bytes: bytes | None, schema_url: str) -> bytes:
    """Encoded fields 1 and 3 of a ResourceSpans/ScopeSpans: its resource/scope bytes, schema_url."""
    head = b"" if field_bytes is None else length_delimited(1, field_bytes)
    return head + (length_delimited(3, schema_url.encode()) if schema_url else b"")


def _event_values(span: Any, events: dict[str, list[tuple[int, AttrRef]]], row: int, columns: _Columns) -> None:
    seen: set[str] = set()
    for ev in span.events:
        slots = events.get(ev.name)
        if slots is None or ev.name in seen:
            continue
        seen.add(ev.name)  # the first event of a name is the one projected
        for slot, ref in slots:
            if ref.type is AttrType.PRESENT:
                columns.values[slot].append((row, True))
            else:
                value = ev.attributes.get(ref.key)
                converted = None if value is None else _convert(value, ref.type)
                if converted is not None:
                    columns.values[slot].append((row, converted))


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
    columns_of_attrs = _Columns(projection)
    resources: dict[int, bytes] = {}
    scopes: dict[int, bytes] = {}
    rejected = 0
    first_problem = ""
    span_keys, event_refs = projection.span_keys, projection.event_refs
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
        group_values: list[tuple[int, Any]] = []
        for key in projection.resource_keys.keys() & list(attrs):
            for slot, kind in projection.resource_keys[key]:
                group_values.append((slot, _convert(attrs[key], kind)))
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
                if span_keys:
                    columns_of_attrs.lookup(span.attributes, span_keys, len(raws) - 1)
                if event_refs and span.events:
                    _event_values(span, event_refs, len(raws) - 1, columns_of_attrs)
            # Per-group columns are filled at C speed, not once per span.
            n = len(raws) - before
            columns_of_attrs.fills += [(slot, before, before + n, v) for slot, v in group_values if v is not None]
            services.extend([service] * n)
            resource_ids.extend([rid] * n)
            scope_ids.extend([sid_group] * n)

    schema = projection.schema
    intrinsic = [trace_ids, span_ids, parents, services, names, kinds, starts, ends, codes, messages]
    arrays = [_column(c, f.type) for c, f in zip(intrinsic, schema)]
    if width:
        types = [schema.field(i).type for i in range(len(intrinsic), len(intrinsic) + width)]
        arrays += columns_of_attrs.build(len(raws), types)
    arrays += [_column(c, f.type) for c, f in zip([resource_ids, scope_ids, raws], list(schema)[-3:])]
    table = pa.Table.from_arrays(arrays, schema=schema)
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
