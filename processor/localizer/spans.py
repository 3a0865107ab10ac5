"""The span columns the localizer reads, and a fast reader of recorded traces into them.

The localizer needs only ids, service, name, kind, times, status and whether a
span carries an exception event.  ``processor.decode`` yields these (and much
more) from protobuf; for OTLP/JSON files — datasets hold hundreds of
thousands of spans — going through protobuf's ``json_format`` costs ten times
more than the analysis, so JSON lines are read straight into columns here.
Other files fall back to ``processor.tracefile`` + ``processor.decode``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

SCHEMA = pa.schema([
    ("trace_id", pa.binary()), ("span_id", pa.binary()), ("parent_span_id", pa.binary()),
    ("service", pa.string()), ("name", pa.string()), ("kind", pa.uint8()),
    ("start_ns", pa.int64()), ("end_ns", pa.int64()), ("status_code", pa.uint8()),
    ("exception", pa.bool_()),
])
_DECODED = [f.name for f in SCHEMA if f.name != "exception"]


def from_decoded(table: pa.Table) -> pa.Table:
    """The localizer's columns from a ``processor.decode`` span table (no exception flag known)."""
    cols = [table.column(n) for n in _DECODED]
    cols.append(pa.nulls(table.num_rows, pa.bool_()))
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def read_spans(path: str | Path) -> pa.Table:
    """Every span in a recorded trace file (OTLP/JSON lines or protobuf, gzip or not)."""
    p = Path(path)
    data = p.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        docs = [json.loads(line) for line in data.splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError):
        return _read_slow(p)
    cols: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
    for doc in docs:
        if not isinstance(doc, dict):
            return _read_slow(p)
        for rs in doc.get("resourceSpans") or doc.get("resource_spans") or []:
            _add_resource_spans(rs, cols)
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def _read_slow(p: Path) -> pa.Table:
    from processor.decode import Projection, decode
    from processor.tracefile import read_requests

    projection = Projection.of([])
    tables = [from_decoded(decode(r, projection).batch.table) for r in read_requests(p)]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _add_resource_spans(rs: dict[str, Any], cols: dict[str, list[Any]]) -> None:
    service = ""
    for attr in (rs.get("resource") or {}).get("attributes") or []:
        if attr.get("key") == "service.name":
            service = (attr.get("value") or {}).get("stringValue", "")
    for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
        for span in ss.get("spans") or []:
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
