"""Synthetic spans for dsl tests: build traces in Python and load them into a
DuckDB table shaped exactly like the store's (``dsl.projection`` contract).

Only the contract is imitated here, not the store: attribute columns are
filled with the contract's nil-safe typing (a wrong-typed value is NULL, an
int also fills a DOUBLE column, events read the span's first event of that
name; the per-span event and link lists hold every event and link).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb

from dsl import AttrRef, AttrSource, AttrType, any_text
from dsl.api import create_span_table
from dsl.compiler import quote_ident
from dsl.projection import SPAN_COLUMNS, column_name

KINDS = {"unspecified": 0, "internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
STATUSES = {"unset": 0, "ok": 1, "error": 2}
MS = 1_000_000


@dataclass
class Span:
    trace: Trace
    span_id: bytes
    name: str
    service: str
    parent: Span | None
    start_ns: int
    end_ns: int
    kind: str = "internal"
    status: str = "unset"
    status_message: str = ""
    attrs: dict[str, object] = field(default_factory=dict)
    resource: dict[str, object] = field(default_factory=dict)
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)  # (name, attrs[, ms from the trace's t0])
    links: list[Span] = field(default_factory=list)  # spans this one links to (OTLP Span.links)
    parent_id: bytes | None = None  # overrides parent (orphans, broken data)


class Trace:
    """Spans of one trace; times are given in milliseconds from ``t0``."""

    _ids = itertools.count(1)

    def __init__(self, trace_id: bytes | None = None, t0_ns: int = 1_700_000_000_000_000_000) -> None:
        self.trace_id = trace_id or next(self._ids).to_bytes(16, "big")
        self.t0 = t0_ns
        self.spans: list[Span] = []
        self._span_ids = itertools.count(1)

    def span(self, name: str, parent: Span | None = None, *, start: float = 0, end: float = 10, service: str | None = None,
             span_id: bytes | None = None, **kw: object) -> Span:
        sid = span_id or next(self._span_ids).to_bytes(8, "big")
        svc = service if service is not None else (parent.service if parent else "svc")
        s = Span(self, sid, name, svc, parent, self.t0 + round(start * MS), self.t0 + round(end * MS), **kw)  # type: ignore[arg-type]
        self.spans.append(s)
        return s


def _typed(value: object, typ: AttrType) -> object:
    match typ:
        case AttrType.STRING:
            return value if isinstance(value, str) else None
        case AttrType.INT:
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        case AttrType.DOUBLE:
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        case AttrType.BOOL:
            return value if isinstance(value, bool) else None
        case AttrType.STRING_ARRAY | AttrType.INT_ARRAY | AttrType.DOUBLE_ARRAY:
            elem = {AttrType.STRING_ARRAY: AttrType.STRING, AttrType.INT_ARRAY: AttrType.INT, AttrType.DOUBLE_ARRAY: AttrType.DOUBLE}[typ]
            if not isinstance(value, list):
                return None
            items = [_typed(v, elem) for v in value]
            return None if any(i is None for i in items) else items
        case AttrType.ANY:
            return any_text(value)
    return None


def attr_value(span: Span, ref: AttrRef) -> object:
    if ref.source is AttrSource.LINKS:
        return [{"trace_id": s.trace.trace_id, "span_id": s.span_id} for s in span.links]
    if ref.source is AttrSource.EVENTS:  # every event, in order: (name, time) or the attribute, nil where absent
        if not ref.key:
            return [{"name": ev[0], "time": span.trace.t0 + round(ev[2] * MS) if len(ev) > 2 else span.start_ns}  # type: ignore[misc]
                    for ev in span.events]
        return [_typed(ev[1][ref.key], ref.type) if ref.key in ev[1] else None for ev in span.events]
    if ref.source is AttrSource.EVENT:
        event = next((attrs for name, attrs in span.events if name == ref.event), None)
        if ref.type is AttrType.PRESENT:
            return event is not None
        return None if event is None or ref.key not in event else _typed(event[ref.key], ref.type)
    source = span.attrs if ref.source is AttrSource.SPAN else span.resource
    return _typed(source[ref.key], ref.type) if ref.key in source else None


def row(span: Span, projection: list[AttrRef]) -> tuple[object, ...]:
    parent = span.parent_id if span.parent_id is not None else (span.parent.span_id if span.parent else None)
    base = (span.trace.trace_id, span.span_id, parent, span.service, span.name, KINDS[span.kind], span.start_ns, span.end_ns,
            STATUSES[span.status], span.status_message)
    return base + tuple(attr_value(span, ref) for ref in projection)


def load(conn: duckdb.DuckDBPyConnection, traces: Iterable[Trace], projection: Iterable[AttrRef], table: str = "batch") -> None:
    """Create ``table`` per the contract and insert every span of ``traces``."""
    refs = sorted(projection)
    create_span_table(conn, table, refs)
    names = [n for n, _ in SPAN_COLUMNS] + [column_name(r) for r in refs]
    rows = [row(s, refs) for t in traces for s in t.spans]
    if rows:
        marks = ", ".join("?" for _ in names)
        conn.executemany(f"INSERT INTO {quote_ident(table)} ({', '.join(names)}) VALUES ({marks})", rows)


def load_fixture(conn: duckdb.DuckDBPyConnection, spans: Iterable[object], projection: Iterable[AttrRef], table: str = "batch") -> None:
    """Like ``load`` for ``dsl.fixtures.FixtureSpan`` values (OTLP/JSON fixtures)."""
    refs = sorted(projection)
    create_span_table(conn, table, refs)
    names = [n for n, _ in SPAN_COLUMNS] + [column_name(r) for r in refs]
    rows = []
    for s in spans:
        span = Span(Trace(s.trace_id), s.span_id, s.name, s.service, None, s.start_ns, s.end_ns,  # type: ignore[attr-defined]
                    attrs=s.attributes, resource=s.resource, events=list(s.events),  # type: ignore[attr-defined]
                    status_message=s.status_message, parent_id=s.parent_span_id)  # type: ignore[attr-defined]
        base = row(span, refs)
        rows.append(base[:5] + (s.kind,) + base[6:8] + (s.status_code,) + base[9:])  # type: ignore[attr-defined]
    if rows:
        marks = ", ".join("?" for _ in names)
        conn.executemany(f"INSERT INTO {quote_ident(table)} ({', '.join(names)}) VALUES ({marks})", rows)
