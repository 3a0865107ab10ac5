"""Synthetic traces with known root causes, for the localizer and eval tests.

A system is a tree of ``Op``s; every call into another service makes a client
span in the caller (network time) around the callee's server span.  Faults:
``slow`` (extra work in a service: its own spans and the client spans it
issues), ``net`` (extra network time on every call into a service), ``error``
(the service's span fails with an exception and errors propagate up),
``cut`` (the service fails its first call's response: the caller stops there).
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from processor.localizer.analyzer import LocalizedBatch, LocalizerAnalyzer
from processor.localizer.spans import SCHEMA


@dataclass
class Op:
    service: str
    name: str
    work_ms: float
    calls: list[Op] = field(default_factory=list)
    parallel: bool = False


@dataclass
class Faults:
    slow: dict[str, float] = field(default_factory=dict)
    net: dict[str, float] = field(default_factory=dict)
    error: set[str] = field(default_factory=set)
    cut: set[str] = field(default_factory=set)


SHOP = Op("frontend", "GET /", 1.0, [
    Op("cart", "GetCart", 1.0, [Op("redis", "HGET", 0.3)]),
    Op("catalog", "ListProducts", 1.5, [Op("db", "SELECT", 0.5)]),
    Op("checkout", "PlaceOrder", 2.0, [
        Op("cart", "GetCart", 1.0, [Op("redis", "HGET", 0.3)]),
        Op("payment", "Charge", 1.0, [Op("db", "SELECT", 0.5)]),
        Op("shipping", "Quote", 0.5),
    ]),
    Op("ads", "GetAds", 1.0),
])


class _Emitter:
    def __init__(self, rng: random.Random, faults: Faults) -> None:
        self.rng, self.faults = rng, faults
        self.rows: list[dict[str, Any]] = []
        self.trace_id = b""

    def _id(self) -> bytes:
        return self.rng.getrandbits(64).to_bytes(8, "big") or b"\x01" * 8

    def jitter(self, ms: float) -> float:
        return ms * self.rng.uniform(0.8, 1.2)

    def span(self, service: str, name: str, parent: bytes | None, start: float, end: float,
             error: bool = False, exception: bool = False) -> dict[str, Any]:
        row = {"trace_id": self.trace_id, "span_id": self._id(), "parent_span_id": parent, "service": service,
               "name": name, "kind": 0, "start_ns": int(start * 1e6), "end_ns": int(end * 1e6),
               "status_code": 2 if error else 0, "exception": exception}
        self.rows.append(row)
        return row

    def server(self, op: Op, parent: bytes | None, start: float) -> tuple[float, bool]:
        """Emit ``op``'s server span and its subtree; returns (end, failed)."""
        row = self.span(op.service, op.name, parent, start, start)
        work = self.jitter(op.work_ms) + self.faults.slow.get(op.service, 0.0)
        t = start + work / 2
        failed = op.service in self.faults.error
        ends = []
        for call in op.calls:
            end, child_failed = self.client(op, call, row["span_id"], t)
            if op.parallel:
                ends.append(end)
            else:
                t = end
            failed = failed or child_failed
            if call.service in self.faults.cut:
                break
        t = max([t, *ends]) + work / 2
        row["end_ns"] = int(t * 1e6)
        if failed:
            row["status_code"] = 2
            row["exception"] = op.service in self.faults.error
        return t, failed

    def client(self, caller: Op, callee: Op, parent: bytes, start: float) -> tuple[float, bool]:
        net = self.jitter(0.4) + self.faults.net.get(callee.service, 0.0) + self.faults.slow.get(caller.service, 0.0)
        row = self.span(caller.service, f"{callee.service}/{callee.name}", parent, start, start)
        end, failed = self.server(callee, row["span_id"], start + net / 2)
        end += net / 2
        row["end_ns"] = int(end * 1e6)
        row["status_code"] = 2 if failed else 0
        return end, failed

    def trace(self, root: Op, start: float) -> None:
        self.trace_id = self.rng.getrandbits(128).to_bytes(16, "big")
        self.server(root, None, start)


def spans(root: Op = SHOP, n: int = 60, faults: Faults | None = None, seed: int = 1) -> list[dict[str, Any]]:
    e = _Emitter(random.Random(seed), faults or Faults())
    for i in range(n):
        e.trace(root, 1_700_000_000_000.0 + i * 100.0)
    return e.rows


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_otlp(rows: list[dict[str, Any]], path: Path) -> None:
    """OTLP/JSON lines (gzip), one request per service, as the collector's file exporter writes."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        span: dict[str, Any] = {"traceId": r["trace_id"].hex(), "spanId": r["span_id"].hex(), "name": r["name"],
                                "kind": 0, "startTimeUnixNano": str(r["start_ns"]),
                                "endTimeUnixNano": str(r["end_ns"]), "status": {}}
        if r["parent_span_id"]:
            span["parentSpanId"] = r["parent_span_id"].hex()
        if r["status_code"]:
            span["status"] = {"code": r["status_code"]}
        if r["exception"]:
            span["events"] = [{"name": "exception", "timeUnixNano": str(r["end_ns"])}]
        by_service.setdefault(r["service"], []).append(span)
    lines = [json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
        "scopeSpans": [{"scope": {"name": "synth"}, "spans": s}]}]}) for svc, s in by_service.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def batch(rows: list[dict[str, Any]], columns: dict[str, list[Any]] | None = None) -> pa.Table:
    """A released batch as the store registers it for analyzers: the intrinsic span columns,
    the exception-event flag and any other projected ``columns`` (by column name), ``_row``."""
    from dsl import column_name
    from processor.localizer.analyzer import EXCEPTION

    out = pa.table({
        "trace_id": pa.array([r["trace_id"] for r in rows], pa.binary()),
        "span_id": pa.array([r["span_id"] for r in rows], pa.binary()),
        "parent_span_id": pa.array([r["parent_span_id"] for r in rows], pa.binary()),
        "service": [r["service"] for r in rows], "name": [r["name"] for r in rows],
        "kind": pa.array([r["kind"] for r in rows], pa.uint8()),
        "start_ns": pa.array([r["start_ns"] for r in rows], pa.int64()),
        "end_ns": pa.array([r["end_ns"] for r in rows], pa.int64()),
        "status_code": pa.array([r["status_code"] for r in rows], pa.uint8()),
        "status_message": [r.get("status_message", "") for r in rows],
        column_name(EXCEPTION): pa.array([r["exception"] for r in rows], pa.bool_()),
    })
    for name, values in (columns or {}).items():
        out = out.append_column(name, pa.array(values))
    return out.append_column("_row", pa.array(range(len(rows)), pa.int64()))


def with_nodes(path: Path, nodes: dict[str, str]) -> None:
    """Rewrite an OTLP/JSON lines file (``write_otlp``) so each service in ``nodes`` carries the
    resource attribute ``k8s.node.name`` with that value."""
    lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines() if line.strip()]
    for doc in lines:
        for rs in doc["resourceSpans"]:
            attrs = rs["resource"]["attributes"]
            service = next(a["value"]["stringValue"] for a in attrs if a["key"] == "service.name")
            if service in nodes:
                attrs.append({"key": "k8s.node.name", "value": {"stringValue": nodes[service]}})
    path.write_bytes(gzip.compress(("\n".join(json.dumps(d) for d in lines) + "\n").encode()))


def analyze(analyzer: LocalizerAnalyzer, conn: duckdb.DuckDBPyConnection, batch: pa.Table) -> LocalizedBatch:
    """``analyzer``'s verdict on ``batch``, registered as the released table."""
    conn.register("released", batch)
    try:
        verdict = analyzer.analyze(conn, "released")
    finally:
        conn.unregister("released")
    assert isinstance(verdict, LocalizedBatch)
    return verdict
