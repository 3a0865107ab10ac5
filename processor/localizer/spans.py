"""The span columns the localizer reads, and a fast reader of recorded traces into them.

The localizer needs only ids, service, name, kind, times, status and whether a
span carries an exception event.  ``processor.receivers.decode`` yields these (and much
more) from protobuf; for OTLP/JSON files — datasets hold hundreds of
thousands of spans — going through protobuf's ``json_format`` costs ten times
more than the analysis, so JSON lines are read straight into columns here.
Other files fall back to ``processor.otlp.tracefile`` + ``processor.receivers.decode``.
Resource and span attributes asked for come as extra string columns named
``dsl.column_name(ref)``, stringified as DuckDB casts the store's columns
(``CAST(x AS VARCHAR)``), so a baseline file and live batches count the same
values.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from dsl import AttrRef, AttrSource, column_name

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
    """Every span in a recorded trace file (OTLP/JSON lines or protobuf, gzip or not); with
    the values of the resource and span ``attributes`` as string columns."""
    p = Path(path)
    refs = [r for r in dict.fromkeys(attributes) if r.source in (AttrSource.RESOURCE, AttrSource.SPAN)]
    data = p.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        docs = [json.loads(line) for line in data.splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError):
        return _read_slow(p, refs)
    cols: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
    cols.update({column_name(r): [] for r in refs})
    for doc in docs:
        if not isinstance(doc, dict):
            return _read_slow(p, refs)
        for rs in doc.get("resourceSpans") or doc.get("resource_spans") or []:
            _add_resource_spans(rs, cols, refs)
    return pa.Table.from_pydict(cols, schema=_schema(refs))


def _schema(refs: Sequence[AttrRef]) -> pa.Schema:
    return pa.schema([*SCHEMA, *((column_name(r), pa.string()) for r in refs)])


def _read_slow(p: Path, refs: Sequence[AttrRef]) -> pa.Table:
    import pyarrow.compute as pc

    from processor.analysis.attributes import Projection
    from processor.otlp.tracefile import read_requests
    from processor.tools.offline import span_table

    decoded = span_table(read_requests(p), Projection.of(refs))
    t = from_decoded(decoded)
    for ref in refs:
        t = t.append_column(column_name(ref), pc.cast(decoded.column(column_name(ref)), pa.string()))
    return t


def _value(v: dict[str, Any] | None) -> str | None:
    """An OTLP/JSON AnyValue as DuckDB would cast the store's column to VARCHAR."""
    if not v:
        return None
    if "stringValue" in v:
        return str(v["stringValue"])
    if "intValue" in v:
        return str(int(v["intValue"]))
    if "boolValue" in v:
        return "true" if v["boolValue"] else "false"
    if "doubleValue" in v:
        return str(float(v["doubleValue"]))
    return None


def _attrs(attrs: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {a.get("key", ""): a.get("value") or {} for a in attrs or ()}


def _add_resource_spans(rs: dict[str, Any], cols: dict[str, list[Any]], refs: Sequence[AttrRef]) -> None:
    resource = _attrs((rs.get("resource") or {}).get("attributes"))
    service = resource.get("service.name", {}).get("stringValue", "")
    fixed = {column_name(r): _value(resource.get(r.key)) for r in refs if r.source == AttrSource.RESOURCE}
    per_span = [(column_name(r), r.key) for r in refs if r.source == AttrSource.SPAN]
    for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
        for span in ss.get("spans") or []:
            for col, value in fixed.items():
                cols[col].append(value)
            if per_span:
                own = _attrs(span.get("attributes"))
                for col, key in per_span:
                    cols[col].append(_value(own.get(key)))
            parent = span.get("parentSpanId") or span.get("parent_span_id")
            status = span.get("status") or {}
            cols["trace_id"].append(bytes.fromhex(span.get("traceId") or span["trace_id"]))
            cols["span_id"].append(bytes.fromhex(span.get("spanId") or span["span_id"]))
            cols["parent_span_id"].append(bytes.fromhex(parent) if parent else None)
            cols["service"].append(service)
            cols["name"].append(span.get("name", ""))
            cols["kind"].append(_enum(span.get("kind", 0), _KINDS))
            cols["start_ns"].append(int(span.get("startTimeUnixNano") or 0))
            cols["end_ns"].append(int(span.get("endTimeUnixNano") or 0))
            cols["status_code"].append(_enum(status.get("code", 0), _CODES))
            cols["exception"].append(any(e.get("name") == "exception" for e in span.get("events") or ()))


_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
          "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def _enum(value: Any, names: dict[str, int]) -> int:
    return names.get(value, 0) if isinstance(value, str) else int(value)
