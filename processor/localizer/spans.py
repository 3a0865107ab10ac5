"""The span columns the localizer reads, and a fast reader of recorded traces into them.

The localizer needs only ids, service, name, kind, times, status and whether a
span carries an exception event.  ``processor.receivers.decode`` yields these (and much
more) from protobuf; for OTLP/JSON files — datasets hold hundreds of
thousands of spans — going through protobuf's ``json_format`` costs ten times
more than the analysis, so their documents are walked straight into columns
(``processor.otlp.otlpjson.spans``).  Protobuf files are decoded as the
pipeline decodes them (``processor.analysis.attributes.span_table``).
Resource and span attributes asked for come as extra string columns named
``dsl.column_name(ref)``, stringified as DuckDB casts the store's columns
(``CAST(x AS VARCHAR)``), so a baseline file and live batches count the same
values; ``attributes.ALL_ATTRIBUTES`` comes in its long form, as the pipeline
projects it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dsl import AttrRef, AttrSource, column_name
from processor.analysis.attributes import (
    ALL_ATTRIBUTES,
    KeyCardinality,
    Projection,
    long_array,
    long_entries_json,
    span_table,
)
from processor.otlp import otlpjson
from processor.otlp.tracefile import read_trace_file

SCHEMA = pa.schema([
    ("trace_id", pa.binary()), ("span_id", pa.binary()), ("parent_span_id", pa.binary()),
    ("service", pa.string()), ("name", pa.string()), ("kind", pa.uint8()),
    ("start_ns", pa.int64()), ("end_ns", pa.int64()), ("status_code", pa.uint8()),
    ("exception", pa.bool_()),
])
_DECODED = [f.name for f in SCHEMA if f.name != "exception"]


def from_decoded(table: pa.Table) -> pa.Table:
    """The localizer's columns from a ``processor.receivers.decode`` span table (no exception flag known)."""
    cols = [table.column(n) for n in _DECODED]
    cols.append(pa.nulls(table.num_rows, pa.bool_()))
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def read_spans(path: str | Path, attributes: Sequence[AttrRef] = ()) -> pa.Table:
    """Every span in a recorded trace file (``processor.otlp.tracefile``: OTLP/JSON or protobuf,
    gzip or not); with the values of the resource and span ``attributes`` as string columns."""
    refs = [r for r in dict.fromkeys(attributes) if r.source in (AttrSource.RESOURCE, AttrSource.SPAN)]
    trace = read_trace_file(path)
    if trace.request is not None:
        return _decoded(trace.request, refs)
    columns = _Columns(refs)
    trace.parse(columns.add)
    return columns.table()


def _decoded(request: ExportTraceServiceRequest, refs: Sequence[AttrRef]) -> pa.Table:
    decoded = span_table([request], Projection.of(refs))
    t = from_decoded(decoded)
    for ref in refs:
        col = decoded.column(column_name(ref))
        t = t.append_column(column_name(ref), col if ref == ALL_ATTRIBUTES else pc.cast(col, pa.string()))
    return t


class _Columns:
    """The spans of OTLP/JSON documents gathered as the columns of ``SCHEMA`` plus attribute columns."""

    def __init__(self, refs: Sequence[AttrRef]) -> None:
        # columns, not rows: a list of per-span tuples keeps the garbage collector busy
        self.columns: list[list[Any]] = [[] for _ in SCHEMA]
        self.resource_refs = [(column_name(r), r.key) for r in refs if r.source == AttrSource.RESOURCE]
        self.span_refs = [(column_name(r), r.key) for r in refs
                          if r.source == AttrSource.SPAN and r != ALL_ATTRIBUTES]
        self.values: dict[str, list[str | None]] = {column_name(r): [] for r in refs if r != ALL_ATTRIBUTES}
        self.every: list[list[tuple[str, str, str | None, float | None]]] | None = (
            [] if ALL_ATTRIBUTES in refs else None)
        self.cardinality = KeyCardinality()
        self.seen: set[tuple[str, str]] = set()

    def add(self, doc: dict[str, Any]) -> None:
        # one append per column, unrolled: this loop runs once for every span of a dataset
        (add_trace_id, add_span_id, add_parent, add_service, add_name, add_kind, add_start, add_end, add_code,
         add_exception) = (c.append for c in self.columns)
        values, resource_refs, span_refs = self.values, self.resource_refs, self.span_refs
        last_resource: dict[str, Any] | None = None
        fixed: list[tuple[str, str | None]] = []
        for resource, span, intrinsics in otlpjson.spans(doc):
            trace_id, span_id, parent, service, name, kind, start, end, code, _ = intrinsics
            add_trace_id(trace_id)
            add_span_id(span_id)
            add_parent(parent)
            add_service(service)
            add_name(name)
            add_kind(kind)
            add_start(start)
            add_end(end)
            add_code(code)
            add_exception(any(e.get("name") == "exception" for e in span.get("events") or ()))
            if resource_refs:
                if resource is not last_resource:
                    last_resource, fixed = resource, [(col, _text(resource.get(key))) for col, key in resource_refs]
                for col, value in fixed:
                    values[col].append(value)
            if span_refs:
                own = otlpjson.attributes(span.get("attributes"))
                for col, key in span_refs:
                    values[col].append(_text(own.get(key)))
            if self.every is not None:
                self.every.append(long_entries_json(self.cardinality, self.seen, _with_events(span)))

    def table(self) -> pa.Table:
        schema = pa.schema([*SCHEMA, *((col, pa.string()) for col in self.values)])
        t = pa.Table.from_pydict(dict(zip(schema.names, [*self.columns, *self.values.values()], strict=True)),
                                 schema=schema)
        if self.every is not None:
            t = t.append_column(column_name(ALL_ATTRIBUTES), long_array(self.every))
        return t


def _with_events(span: dict[str, Any]) -> dict[str, Any]:
    """A span's attribute values and those of its first event of each name (keyed ``event:key``),
    as ``attributes.ALL_ATTRIBUTES`` has them."""
    values = otlpjson.attribute_values(span.get("attributes"))
    seen: set[str] = set()
    for event in span.get("events") or ():
        name = event.get("name", "")
        if name not in seen:
            seen.add(name)
            values.update((f"{name}:{k}", v) for k, v in otlpjson.attribute_values(event.get("attributes")).items())
    return values


def _text(value: dict[str, Any] | None) -> str | None:
    """An OTLP/JSON AnyValue as DuckDB would cast the store's column to VARCHAR."""
    value = otlpjson.any_value(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (str, int, float)) else None
