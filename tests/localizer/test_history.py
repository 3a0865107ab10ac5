"""The learning baseline: sketch quantiles, decay by traffic volume, bounded size."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from dsl import AttrRef, AttrSource, column_name
from processor.localizer import Baseline, span_metrics
from processor.localizer.history import History, HistoryConfig
from tests.support import localizer_synth as synth
from tests.support.localizer_synth import with_nodes

NODE_REF = AttrRef(AttrSource.RESOURCE, "k8s.node.name")
NODE = column_name(NODE_REF)


def _metrics(n: int, seed: int, faults: synth.Faults | None = None) -> pa.Table:
    return span_metrics(duckdb.connect(), synth.table(synth.spans(n=n, faults=faults, seed=seed)))


def _op(base: Baseline, service: str, name: str) -> dict:
    return next(r for r in base.ops.to_pylist() if (r["service"], r["name"]) == (service, name))


def test_sketch_quantiles_match_exact_ones_within_the_bucket_width() -> None:
    history = History()
    metrics = _metrics(300, seed=1)
    history.learn(metrics)
    exact = Baseline.learn(duckdb.connect(), metrics)
    for service, name in [("db", "SELECT"), ("frontend", "GET /"), ("checkout", "PlaceOrder")]:
        got, want = _op(history.baseline(), service, name), _op(exact, service, name)
        for col in ("self_med", "self_p99", "dur_med", "dur_p99"):
            assert float(got[col]) == pytest.approx(float(want[col]), rel=0.06), col
    shapes = {(r["service"], r["name"], r["sig"]): r["share"] for r in history.baseline().shapes.to_pylist()}
    assert shapes[("checkout", "PlaceOrder", "checkout:cart/GetCart|checkout:payment/Charge|checkout:shipping/Quote")] \
        == pytest.approx(1.0)


def test_operations_seen_too_rarely_are_not_judged() -> None:
    history = History(HistoryConfig(min_count=50))
    history.learn(_metrics(30, seed=2))       # ads: 30 spans, db: 60 (called twice per trace)
    judged = {(r["service"], r["name"]) for r in history.baseline().ops.to_pylist()}
    assert ("db", "SELECT") in judged and ("ads", "GetAds") not in judged
    history.learn(_metrics(30, seed=3))
    assert ("ads", "GetAds") in {(r["service"], r["name"]) for r in history.baseline().ops.to_pylist()}


def test_old_traffic_decays_so_a_lasting_change_is_learned() -> None:
    history = History(HistoryConfig(half_life=100))
    history.learn(_metrics(200, seed=4))
    before = float(_op(history.baseline(), "db", "SELECT")["self_med"])
    for seed in range(5, 10):
        history.learn(_metrics(100, seed=seed, faults=synth.Faults(slow={"db": 5.0})))
    after = float(_op(history.baseline(), "db", "SELECT")["self_med"])
    assert before < 1e6 < 4e6 < after


def test_suspicious_traces_are_learned_only_a_little() -> None:
    history = History()
    history.learn(_metrics(200, seed=4))
    slow = _metrics(100, seed=11, faults=synth.Faults(slow={"db": 5.0}))
    history.learn(slow, dict.fromkeys(slow.column("trace_id").to_pylist(), 0.01))
    assert float(_op(history.baseline(), "db", "SELECT")["self_p99"]) < 1e6


def test_memory_is_bounded() -> None:
    history = History(HistoryConfig(max_ops=5, max_shapes=1))
    for seed in range(3):
        history.learn(_metrics(50, seed=seed))
    size = history.size()
    assert size["lz_ops"] == 5 and size["lz_shapes"] <= 5
    assert size["lz_hist"] <= 5 * 2 * 60



def test_evicted_operations_take_their_rows_with_them() -> None:
    history = History(HistoryConfig(min_count=1, max_ops=2))
    for seed in range(2):  # the second batch evicts from tables the first one filled
        rows = synth.spans(n=50, seed=seed)
        history.learn(span_metrics(duckdb.connect(), synth.table(rows)), values=_values(rows, ["node-1"] * len(rows)))

    def keys(conn: duckdb.DuckDBPyConnection) -> dict[str, set]:
        ops = {t: set(conn.sql(f"SELECT DISTINCT service, name FROM {t}").fetchall())
               for t in ("lz_ops", "lz_hist", "lz_shapes")}
        return {**ops, **{t: set(conn.sql(f"SELECT DISTINCT service FROM {t}").fetchall())
                          for t in ("lz_values", "lz_vtot")}}

    held = history.with_sketches(keys)
    assert len(held["lz_ops"]) == 2
    assert held["lz_hist"] == held["lz_shapes"] == held["lz_ops"]
    assert held["lz_values"] == held["lz_vtot"] == {(s,) for s, _ in held["lz_ops"]}


def test_an_operation_evicted_in_a_later_batch_leaves_every_table() -> None:
    # ads is learned in the first batch, its attribute keys at a sample's scale (1,000 traces a
    # sampled one), then stops; one batch later its operation has decayed below the prune weight
    # (30 x 0.5 ** 12) while its keys have not (x 1,000): the update that evicts it must see that,
    # though it is not the first (which checks every table anyway)
    history = History(HistoryConfig(min_count=1, half_life=2.5))
    for seed in range(2):
        rows = [r for r in synth.spans(n=30, seed=seed) if seed == 0 or r["service"] != "ads"]
        history.learn(span_metrics(duckdb.connect(), synth.table(rows)), attributes=_long(rows), scale=1000.0)

    def services(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
        return {t: {s for (s,) in conn.sql(f"SELECT DISTINCT service FROM {t}").fetchall()}
                for t in ("lz_ops", "lz_hist", "lz_aops", "lz_akeys", "lz_acat")}

    held = history.with_sketches(services)
    assert "db" in held["lz_ops"] and "db" in held["lz_akeys"]
    assert all("ads" not in s for s in held.values()), held


def _long(rows: list[dict]) -> pa.Table:
    """One string attribute per span in the long form ``History.learn`` takes."""
    return pa.table({"service": [r["service"] for r in rows], "name": [r["name"] for r in rows],
                     "trace_id": pa.array([r["trace_id"] for r in rows], pa.binary()),
                     "span_id": pa.array([r["span_id"] for r in rows], pa.binary()),
                     "key": ["tier"] * len(rows), "type": ["string"] * len(rows), "sval": ["gold"] * len(rows),
                     "nval": pa.array([None] * len(rows), pa.float64())})


def _values(rows: list[dict], nodes: list[str | None]) -> pa.Table:
    return pa.table({"trace_id": pa.array([r["trace_id"] for r in rows], pa.binary()),
                     "service": [r["service"] for r in rows], NODE: pa.array(nodes, pa.string())})


def _shares(history: History) -> dict[tuple[str, str], float]:
    return {(r["service"], r["val"]): r["share"] for r in history.values().values.to_pylist()}


def test_attribute_values_are_counted_per_service_against_all_its_spans() -> None:
    history = History(HistoryConfig(min_count=1))
    rows = synth.spans(n=50, seed=1)
    # db spans alternate node-1 / node-2; every other service has no node attribute at all
    nodes = [(f"node-{i % 2 + 1}" if r["service"] == "db" else None) for i, r in enumerate(rows)]
    history.learn(span_metrics(duckdb.connect(), synth.table(rows)), values=_values(rows, nodes))
    shares = _shares(history)
    assert shares[("db", "node-1")] == pytest.approx(0.5) and shares[("db", "node-2")] == pytest.approx(0.5)
    assert {s for s, _ in shares} == {"db"}
    known = set(history.values().known.column("service").to_pylist())
    assert {"db", "frontend", "cart"} <= known     # frontend is known: it normally carries no node


def test_value_counts_stay_bounded_and_evicted_weight_is_remembered() -> None:
    history = History(HistoryConfig(min_count=1, max_values=3))
    for seed in range(4):
        rows = synth.spans(n=40, seed=seed)
        nodes = [f"node-{(i + seed) % 12}" for i in range(len(rows))]   # 12 nodes, evenly used
        history.learn(span_metrics(duckdb.connect(), synth.table(rows)), values=_values(rows, nodes))
    size = history.size()
    services = len(history.values().known)
    assert size["lz_vtot"] == services
    assert size["lz_values"] <= services * (3 + 1)   # three values and one "other" row per (service, key)
    unknown = {r["service"]: r["share"] for r in history.values().unknown.to_pylist()}
    # a node not kept was seen, so its share is not known to be zero — but it is at most a kept one's
    for (service, _), share in _shares(history).items():
        assert 0 < unknown[service] <= share + 1e-9


def test_value_counts_decay_with_traffic_so_a_move_is_learned() -> None:
    history = History(HistoryConfig(min_count=1, half_life=50))
    for seed, node in [(1, "node-1"), *((s, "node-2") for s in range(2, 12))]:
        rows = synth.spans(n=50, seed=seed)
        history.learn(span_metrics(duckdb.connect(), synth.table(rows)), values=_values(rows, [node] * len(rows)))
    shares = _shares(history)
    assert shares[("db", "node-2")] > 0.99 and shares.get(("db", "node-1"), 0.0) < 0.01


def test_seeding_from_a_file_learns_the_attribute_values(tmp_path) -> None:
    path = tmp_path / "base.jsonl.gz"
    synth.write_otlp(synth.spans(n=40, seed=3), path)
    with_nodes(path, {"db": "node-1"})
    history = History(HistoryConfig(min_count=1))
    history.seed(path, [NODE_REF])
    shares = _shares(history)
    assert shares == {("db", "node-1"): pytest.approx(1.0)}
