"""Attribution: attribute values over-represented among anomalous spans."""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa

from processor.localizer.attribution import attribute


def _batch(n: int = 300, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Spans of three services on four nodes; the first 30 (slow) of every service run on node-3."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        slow = i < 30 * 3
        rows.append({"trace_id": (i // 3).to_bytes(16, "big"), "span_id": i.to_bytes(8, "big"),
                     "service": f"svc-{i % 3}", "node": "node-3" if slow else f"node-{rng.randint(1, 4)}",
                     "version": "v1" if rng.random() < 0.5 else "v2", "code": 200})
    table = pa.Table.from_pylist(rows)
    selected = table.slice(0, 90).select(["trace_id", "span_id"])
    return table, selected


def test_the_node_shared_by_the_slow_spans_of_many_services_is_found() -> None:
    conn = duckdb.connect()
    table, selected = _batch()
    conn.register("released", table)
    found = attribute(conn, "released", selected, {"k8s.node.name": "node", "service.version": "version",
                                                   "http.response.status_code": "code", "absent": "no_such"})
    assert [(a.key, a.value) for a in found] == [("k8s.node.name", "node-3")]
    a = found[0]
    assert a.share == 1.0 and 0.15 < a.normal_share < 0.35
    assert a.selected == a.selected_total == 90 and len(a.spans) == 90
    assert a.message.startswith("k8s.node.name=node-3 in 100% of anomalous spans vs ")


def test_too_few_anomalous_spans_say_nothing() -> None:
    conn = duckdb.connect()
    table, selected = _batch()
    conn.register("released", table)
    assert attribute(conn, "released", selected.slice(0, 2), {"k8s.node.name": "node"}) == []
    assert attribute(conn, "released", selected.slice(0, 0), {"k8s.node.name": "node"}) == []
    assert attribute(conn, "released", selected, {}) == []
