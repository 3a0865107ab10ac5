"""Attribution: attribute values over-represented among anomalous spans."""

from __future__ import annotations

import dataclasses
import random

import duckdb
import pyarrow as pa
import pytest

from processor.localizer.attribution import (
    KNOWN_SCHEMA,
    UNKNOWN_SCHEMA,
    VALUES_SCHEMA,
    ValueBaseline,
    attribute,
)


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
    assert a.share == 1.0 and 0.15 < a.normal_share < 0.35 and a.reference == "batch"
    assert a.selected == a.selected_total == 90 and len(a.spans) == 90
    assert a.message.startswith("k8s.node.name=node-3 in 100% of anomalous spans vs ")


def test_too_few_anomalous_spans_say_nothing() -> None:
    conn = duckdb.connect()
    table, selected = _batch()
    conn.register("released", table)
    assert attribute(conn, "released", selected.slice(0, 2), {"k8s.node.name": "node"}) == []
    assert attribute(conn, "released", selected.slice(0, 0), {"k8s.node.name": "node"}) == []
    assert attribute(conn, "released", selected, {}) == []


def _reference(service: str, shares: dict[str, float], key: str = "node") -> ValueBaseline:
    """A learned baseline that knows ``service``: value of ``key`` -> share of its spans."""
    return ValueBaseline(
        pa.table({"service": [service] * len(shares), "key": [key] * len(shares), "val": list(shares),
                  "share": list(shares.values())}, schema=VALUES_SCHEMA),
        UNKNOWN_SCHEMA.empty_table(), pa.table({"service": [service]}, schema=KNOWN_SCHEMA))


def _one_service(slow_nodes: list[str], normal_nodes: list[str]) -> tuple[pa.Table, pa.Table]:
    nodes = slow_nodes + normal_nodes
    table = pa.table({"trace_id": [i.to_bytes(16, "big") for i in range(len(nodes))],
                      "span_id": [i.to_bytes(8, "big") for i in range(len(nodes))],
                      "service": ["db"] * len(nodes), "node": nodes})
    return table, table.slice(0, len(slow_nodes)).select(["trace_id", "span_id"])


def test_a_value_common_in_the_whole_batch_but_rare_in_the_baseline_is_found() -> None:
    # since a move every db span runs on node-3, slow or not: within the batch nothing stands out
    conn = duckdb.connect()
    table, selected = _one_service(["node-3"] * 20, ["node-3"] * 80)
    conn.register("released", table)
    assert attribute(conn, "released", selected, {"k8s.node.name": "node"}) == []
    reference = _reference("db", {"node-1": 0.45, "node-2": 0.45, "node-3": 0.10})
    (a,) = attribute(conn, "released", selected, {"k8s.node.name": "node"}, reference)
    assert (a.key, a.value, a.reference) == ("k8s.node.name", "node-3", "baseline")
    assert a.share == 1.0 and a.normal_share == pytest.approx(0.10)
    assert a.message == "k8s.node.name=node-3 in 100% of anomalous spans vs 10% in the baseline (20 of 20 spans)"


def test_a_value_rare_in_the_batch_but_usual_in_the_baseline_is_not_reported() -> None:
    # the slow spans all ran on node-3, which normally carries nearly all db traffic; today
    # the healthy spans happen to run elsewhere: the baseline says node-3 is nothing special
    conn = duckdb.connect()
    table, selected = _one_service(["node-3"] * 20, ["node-1"] * 40 + ["node-2"] * 40)
    conn.register("released", table)
    (within,) = attribute(conn, "released", selected, {"k8s.node.name": "node"})
    assert (within.value, within.reference, within.normal_share) == ("node-3", "batch", 0.0)
    assert within.message.endswith("vs 0% normally in this batch (20 of 20 spans)")
    reference = _reference("db", {"node-3": 0.95, "node-1": 0.05})
    assert attribute(conn, "released", selected, {"k8s.node.name": "node"}, reference) == []


def test_services_the_baseline_does_not_know_are_compared_within_the_batch() -> None:
    conn = duckdb.connect()
    table, selected = _batch()
    conn.register("released", table)
    # the baseline knows svc-0 only, and there node-3 is as common as in the slow spans
    reference = _reference("svc-0", {"node-3": 1.0})
    (a,) = attribute(conn, "released", selected, {"k8s.node.name": "node"}, reference)
    assert (a.value, a.reference, a.selected_total) == ("node-3", "baseline and batch", 90)
    # svc-0's 30 slow spans are expected on node-3, the others' at their batch share
    assert 30 < a.expected < 30 + 60 * 0.35 and a.share == 1.0


def test_a_value_evicted_from_the_baseline_counts_at_most_as_common_as_the_evicted_weight() -> None:
    conn = duckdb.connect()
    table, selected = _one_service(["node-9"] * 20, ["node-1"] * 80)
    conn.register("released", table)
    kept = _reference("db", {"node-1": 0.5})
    evicted = dataclasses.replace(kept, unknown=pa.table(
        {"service": ["db"], "key": ["node"], "share": [0.9]}, schema=UNKNOWN_SCHEMA))
    assert [a.value for a in attribute(conn, "released", selected, {"k8s.node.name": "node"}, kept)] == ["node-9"]
    assert attribute(conn, "released", selected, {"k8s.node.name": "node"}, evicted) == []
