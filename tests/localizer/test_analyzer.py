"""The live analyzer: a baseline learned over batches, per-trace candidates, symptoms, attribution."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from dsl import BASELINE_TABLE, AttrRef, AttrSource, column_name, load_rules
from processor.analysis.attributes import ALL_ATTRIBUTES, Projection, Projector, long_array
from processor.analysis.combined import CombinedAnalyzer
from processor.analysis.rules import RuleAnalyzer
from processor.analysis.runner import analyze_released
from processor.analysis.verdict import BatchVerdict
from processor.localizer import LocalizerAnalyzer
from processor.localizer.analyzer import EXCEPTION, EXCEPTION_MESSAGE, EXCEPTION_TYPE
from processor.otlp.tracefile import read_requests
from processor.tools.offline import analyze
from tests.support import localizer_synth as synth

NODE = column_name(AttrRef(AttrSource.RESOURCE, "k8s.node.name"))


@pytest.fixture
def conn() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    yield c
    c.close()


@pytest.fixture(scope="module")
def learned() -> LocalizerAnalyzer:
    """An analyzer that has seen three batches of normal traffic, and nothing else."""
    analyzer = LocalizerAnalyzer()
    conn = duckdb.connect()
    for seed in range(3):
        assert not synth.analyze(analyzer, conn, synth.batch(synth.spans(n=40, seed=100 + seed))).traces
    return analyzer


def _mixed(faults: synth.Faults, seed: int, n_bad: int = 8) -> tuple[list[dict[str, Any]], set[bytes]]:
    normal = synth.spans(n=40, seed=seed)
    bad = synth.spans(n=n_bad, faults=faults, seed=seed + 1)
    return normal + bad, {r["trace_id"] for r in bad}


def test_projection_asks_for_exceptions_and_attribution_keys() -> None:
    refs = LocalizerAnalyzer().projection()
    assert {EXCEPTION, EXCEPTION_TYPE, EXCEPTION_MESSAGE} <= refs
    assert AttrRef(AttrSource.RESOURCE, "k8s.node.name") in refs


def test_a_cold_analyzer_blames_no_latency_then_learns(conn: duckdb.DuckDBPyConnection) -> None:
    analyzer = LocalizerAnalyzer()
    slow = synth.batch(synth.spans(n=20, faults=synth.Faults(slow={"db": 20.0}), seed=5))
    assert not synth.analyze(analyzer, conn, slow).traces           # nothing to compare with yet
    for seed in range(3):
        synth.analyze(analyzer, conn, synth.batch(synth.spans(n=40, seed=10 + seed)))
    assert analyzer.history.traces_seen == 140
    assert {"db", "payment", "frontend"} <= set(analyzer.history.baseline().ops.column("service").to_pylist())


def test_learned_baseline_blames_the_slow_leaf_not_its_waiting_parents(
        learned: LocalizerAnalyzer, conn: duckdb.DuckDBPyConnection) -> None:
    rows, bad = _mixed(synth.Faults(slow={"db": 20.0}), seed=200)
    verdict = synth.analyze(learned, conn, synth.batch(rows))
    assert set(verdict.traces) == bad                      # normal traces get no candidates
    for trace_id in bad:
        v = verdict.traces[trace_id]
        assert v.top is not None and (v.top.service, v.top.name, v.top.rank) == ("db", "SELECT", 1)
        assert re.match(r"self time 2\d ms vs p99 0\.\d\d ms \(median 0\.\d\d ms\) on the critical path",
                        v.top.evidence[0].message)
        assert v.top.confidence > 0.9
        # the ancestors only waited: they are symptoms, not candidates
        names = {r["span_id"]: (r["service"], r["name"]) for r in rows if r["trace_id"] == trace_id}
        symptoms = {names[s.span_id] for s in verdict.symptoms[trace_id]}
        assert ("frontend", "GET /") in symptoms and ("payment", "Charge") in symptoms
        assert not symptoms & {(c.service, c.name) for c in v.candidates}
        assert v.root_span_id is not None and names[v.root_span_id] == ("frontend", "GET /")


def test_a_seeded_analyzer_blames_from_the_first_batch(tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> None:
    synth.write_otlp(synth.spans(n=80, seed=0), tmp_path / "normal.jsonl.gz")
    analyzer = LocalizerAnalyzer(tmp_path / "normal.jsonl.gz")
    rows, bad = _mixed(synth.Faults(net={"cart": 8.0}), seed=300)
    verdict = synth.analyze(analyzer, conn, synth.batch(rows))
    assert set(verdict.traces) == bad
    top = [verdict.traces[t].top for t in bad]
    assert all(c is not None and c.service == "cart" for c in top)
    assert "waits outside cart's span" in top[0].evidence[0].message


def test_error_origin_carries_the_exception_and_its_propagation_is_symptoms(
        learned: LocalizerAnalyzer, conn: duckdb.DuckDBPyConnection) -> None:
    rows = synth.spans(n=10, faults=synth.Faults(error={"shipping"}), seed=400)
    exc_type = ["TimeoutError" if r["exception"] else None for r in rows]
    exc_msg = ["quote backend timed out" if r["exception"] else None for r in rows]
    batch = synth.batch(rows, {column_name(EXCEPTION_TYPE): exc_type, column_name(EXCEPTION_MESSAGE): exc_msg})
    verdict = synth.analyze(learned, conn, batch)
    assert len(verdict.traces) == 10
    names = {r["span_id"]: (r["service"], r["name"]) for r in rows}
    for trace_id, v in verdict.traces.items():
        assert (v.top.service, v.top.name) == ("shipping", "Quote")
        assert "exception recorded (TimeoutError: quote backend timed out)" in v.top.evidence[0].message
        # shipping -> checkout's client span -> PlaceOrder -> frontend's client span -> GET /
        assert {names[s.span_id] for s in verdict.symptoms[trace_id]} == {
            ("checkout", "shipping/Quote"), ("checkout", "PlaceOrder"),
            ("frontend", "checkout/PlaceOrder"), ("frontend", "GET /")}
        # each names the origin it inherited from, which the annotator writes as rca.caused_by
        assert {s.caused_by for s in verdict.symptoms[trace_id]} == {v.top.span_id}


def _span(trace: bytes, i: int, parent: int | None, service: str, name: str, start: float, end: float,
          error: bool = False) -> dict[str, Any]:
    return {"trace_id": trace, "span_id": i.to_bytes(8, "big"), "parent_span_id": parent.to_bytes(8, "big")
            if parent else None, "service": service, "name": name, "kind": 0, "start_ns": int(start * 1e6),
            "end_ns": int(end * 1e6), "status_code": 2 if error else 0, "exception": error}


def test_a_retry_loop_is_one_candidate_its_first_failed_attempt(
        learned: LocalizerAnalyzer, conn: duckdb.DuckDBPyConnection) -> None:
    # frontend calls cart three times in a row (normal timings); the first two attempts fail
    t = b"\x07" * 16
    rows = [_span(t, 1, None, "frontend", "GET /", 0, 5.2)]
    for attempt, start in enumerate((0.5, 1.9, 3.3)):
        failed = attempt < 2
        client, server = 10 + 2 * attempt, 11 + 2 * attempt
        rows.append(_span(t, client, 1, "frontend", "cart/GetCart", start, start + 1.4, error=failed))
        rows.append(_span(t, server, client, "cart", "GetCart", start + 0.2, start + 1.2, error=failed))
    verdict = synth.analyze(learned, conn, synth.batch(rows))
    v = verdict.traces[t]
    assert len(v.candidates) == 1 and v.top.span_id == (11).to_bytes(8, "big")   # the first attempt
    assert "2 of 3 cart:GetCart attempts failed (retried)" in v.top.evidence[0].message
    # the failed client spans inherited the error; the caller recovered, so its span is not a symptom
    assert {s.span_id for s in verdict.symptoms[t]} == {(10).to_bytes(8, "big")}


def test_a_broken_trace_without_its_root_still_blames_its_slow_leaf(
        learned: LocalizerAnalyzer, conn: duckdb.DuckDBPyConnection) -> None:
    rows, bad = _mixed(synth.Faults(slow={"db": 20.0}), seed=500)
    kept = [r for r in rows if not (r["trace_id"] in bad and r["parent_span_id"] is None)]
    verdict = synth.analyze(learned, conn, synth.batch(kept))
    assert set(verdict.traces) == bad
    names = {r["span_id"]: (r["service"], r["name"]) for r in kept}
    for trace_id in bad:
        v = verdict.traces[trace_id]
        assert (v.top.service, v.top.name) == ("db", "SELECT")
        assert names[v.root_span_id] == ("frontend", "cart/GetCart")   # the earliest fragment's head
        assert ("checkout", "PlaceOrder") in {names[s.span_id] for s in verdict.symptoms[trace_id]}


def test_a_missing_middle_span_keeps_the_error_origin_a_candidate(
        learned: LocalizerAnalyzer, conn: duckdb.DuckDBPyConnection) -> None:
    rows = synth.spans(n=10, faults=synth.Faults(error={"db"}), seed=510)
    # payment's client span to db is lost: db's span is an orphan, payment's Charge looks like an origin
    kept = [r for r in rows if (r["service"], r["name"]) != ("payment", "db/SELECT")]
    verdict = synth.analyze(learned, conn, synth.batch(kept))
    assert len(verdict.traces) == 10
    for v in verdict.traces.values():
        # both look like origins now (the gap hides which child failed Charge); db keeps its exception
        origins = {(c.service, c.name): c for c in v.candidates}
        assert {("db", "SELECT"), ("payment", "Charge")} <= set(origins)
        assert "exception recorded" in origins[("db", "SELECT")].evidence[0].message


def test_attribution_names_the_node_the_slow_spans_share(
        learned: LocalizerAnalyzer, conn: duckdb.DuckDBPyConnection) -> None:
    rows, bad = _mixed(synth.Faults(slow={"db": 20.0, "redis": 20.0}), seed=600)
    rng = random.Random(6)
    nodes = ["node-3" if r["trace_id"] in bad and r["service"] in ("db", "redis") else f"node-{rng.randint(1, 4)}"
             for r in rows]
    verdict = synth.analyze(learned, conn, synth.batch(rows, {NODE: nodes}))
    assert [(a.key, a.value) for a in verdict.attributions] == [("k8s.node.name", "node-3")]
    a = verdict.attributions[0]
    assert a.share == 1.0 and a.normal_share < 0.4
    assert a.message.startswith("k8s.node.name=node-3 in 100% of anomalous spans vs ")
    tops = [verdict.traces[t].top for t in bad]
    assert all(any(e.source == "localizer.attribution" for e in c.evidence) for c in tops)


def _values_learned(value_sample_traces: int, rows: list[dict[str, Any]], nodes: list[str],
                    conn: duckdb.DuckDBPyConnection) -> dict[str, list[dict[str, Any]]]:
    """lz_vtot and lz_values of a cold analyzer with ``value_sample_traces`` after one batch of ``rows``."""
    analyzer = LocalizerAnalyzer(value_sample_traces=value_sample_traces)
    batch = synth.batch(rows, {NODE: nodes})
    batch = batch.add_column(batch.num_columns - 1, column_name(ALL_ATTRIBUTES), long_array([[]] * len(rows)))
    synth.analyze(analyzer, conn, batch)
    held = {t: rows.to_pylist() for t, rows in analyzer.history.sketches().tables.items() if t in ("lz_vtot", "lz_values")}
    analyzer.close()
    return held


def test_attribution_values_are_learned_from_the_sampled_traces_each_standing_for_its_share(
        conn: duckdb.DuckDBPyConnection) -> None:
    rows = synth.spans(n=200, seed=900)
    rng = random.Random(9)
    nodes = [f"node-{rng.randint(1, 4)}" for _ in rows]
    every = _values_learned(1000, rows, nodes, conn)
    sampled = _values_learned(50, rows, nodes, conn)
    # a sample of 50 of the 200 traces, each counting four times: the services' span counts and the
    # values' shares come out near those of every trace, not a quarter of them
    total = {r["service"]: r["n"] for r in every["lz_vtot"]}
    assert sum(total.values()) == len(rows)
    for r in sampled["lz_vtot"]:
        assert abs(r["n"] - total[r["service"]]) <= 0.35 * total[r["service"]]
    share = {(r["service"], r["val"]): r["w"] / total[r["service"]] for r in every["lz_values"]}
    sampled_total = {r["service"]: r["n"] for r in sampled["lz_vtot"]}
    for r in sampled["lz_values"]:
        assert abs(r["w"] / sampled_total[r["service"]] - share[(r["service"], r["val"])]) < 0.2
    # a batch with fewer traces than the sample learns every trace's values as they are
    assert _values_learned(200, rows, nodes, conn) == every


def test_a_failing_batch_is_logged_at_the_analysis_boundary_and_yields_an_empty_verdict(
        conn: duckdb.DuckDBPyConnection, caplog: pytest.LogCaptureFixture) -> None:
    # a batch without the span columns: the localizer raises, the analysis boundary
    # (runner.analyze_released) logs it and the batch goes on without a verdict
    localizer = LocalizerAnalyzer()
    with pytest.raises(duckdb.Error):
        conn.register("broken", pa.table({"trace_id": [b"x"]}))
        localizer.analyze(conn, "broken")
    released = pa.table({"trace_id": pa.array([b"x"], pa.binary())})
    with caplog.at_level(logging.ERROR):
        verdict = analyze_released(localizer, Projector(Projection.of(())), conn, released, {})
    assert type(verdict) is BatchVerdict and not verdict.traces
    assert "analysis failed on a batch of 1 spans" in caplog.text


def test_rules_read_the_learned_baseline_through_the_combined_analyzer(
        tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> None:
    path = tmp_path / "baseline.rules"
    path.write_text('''rule code.slow_vs_baseline {
  title "self time far above its baseline"
  layer code
  severity high
  confidence 0.9
  match span e where e.self_time > 5 * e.baseline_p99 and e.zscore > 3
  message "{e.self_time} vs p99 {e.baseline_p99}"
}
''', encoding="utf-8")
    rules = load_rules([path])

    def run(combined: CombinedAnalyzer, rows: list[dict[str, Any]]) -> BatchVerdict:
        conn.register("released", synth.batch(rows))
        try:
            return combined.analyze(conn, "released")
        finally:
            conn.unregister("released")

    def fired(verdict: BatchVerdict) -> set[bytes]:
        return {t for t, v in verdict.traces.items() for c in v.candidates for e in c.evidence
                if e.source == "code.slow_vs_baseline" and c.service == "db"}

    rows, bad = _mixed(synth.Faults(slow={"db": 20.0}), seed=420)
    cold = CombinedAnalyzer([RuleAnalyzer(rules)], [LocalizerAnalyzer()])
    assert fired(run(cold, rows)) == set()  # no baseline yet: the rule's values are nil
    combined = CombinedAnalyzer([RuleAnalyzer(rules)], [LocalizerAnalyzer()])
    for seed in range(3):
        run(combined, synth.spans(n=40, seed=410 + seed))
    assert fired(run(combined, rows)) == bad
    assert conn.execute(f"SELECT count(*) FROM duckdb_views() WHERE view_name = '{BASELINE_TABLE}'").fetchall() == [(0,)]


def test_offline_analysis_gives_rules_the_seeded_baseline(tmp_path: Path) -> None:
    synth.write_otlp(synth.spans(n=80, seed=0), tmp_path / "normal.jsonl.gz")
    rows, bad = _mixed(synth.Faults(slow={"db": 20.0}), seed=500)
    synth.write_otlp(rows, tmp_path / "incident.jsonl.gz")
    path = tmp_path / "b.rules"
    path.write_text('rule code.slow {\n title "t"\n layer code\n severity high\n confidence 0.9\n'
                    ' match span e where e.service = "db" and e.self_time > 5 * e.baseline_p99\n}\n', encoding="utf-8")
    rules = load_rules([path])
    requests = read_requests(tmp_path / "incident.jsonl.gz")
    assert analyze(requests, rules).findings == []  # no localizer, no baseline: nil
    result = analyze(requests, rules, LocalizerAnalyzer(tmp_path / "normal.jsonl.gz"))
    assert {f.trace_id for f in result.findings} == bad


def test_attribution_compares_with_the_values_learned_from_the_baseline(
        tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> None:
    # normally db runs on node-1; today every db span runs on node-3, slow or not — within the
    # batch node-3 is nothing special, against the baseline it is what the slow spans share
    path = tmp_path / "baseline.jsonl.gz"
    synth.write_otlp(synth.spans(n=60, seed=700), path)
    synth.with_nodes(path, {"db": "node-1"})
    analyzer = LocalizerAnalyzer(path)
    rows, bad = _mixed(synth.Faults(slow={"db": 20.0}), seed=710)
    nodes = ["node-3" if r["service"] == "db" else None for r in rows]
    verdict = synth.analyze(analyzer, conn, synth.batch(rows, {NODE: nodes}))
    assert [(a.key, a.value, a.reference) for a in verdict.attributions] == [("k8s.node.name", "node-3", "baseline")]
    assert verdict.attributions[0].message.startswith("k8s.node.name=node-3 in 100% of anomalous spans vs 0% in the baseline")
    tops = [verdict.traces[t].top for t in bad]
    assert all(any("node-3" in e.message for e in c.evidence if e.source == "localizer.attribution") for c in tops)
    # the batch was learned too (weighted): node-3 now has some weight in db's counts
    assert ("db", NODE, "node-3") in {(r["service"], r["key"], r["val"])
                                     for r in analyzer.history.values().values.to_pylist()}
    analyzer.close()


def test_the_batch_columns_the_caller_knows_are_read_as_from_duckdb(conn: duckdb.DuckDBPyConnection) -> None:
    from dsl import columns_of, known_batch

    rows = synth.spans(n=5, seed=950)
    batch = synth.batch(rows, {NODE: ["node-1"] * len(rows)})
    conn.register("released", batch)
    try:
        probed = columns_of(conn, "released")
        with known_batch("released", batch):
            assert columns_of(conn, "released") == probed == set(batch.column_names)
        with known_batch("another", batch.drop_columns([NODE])):  # known of another table: asked of DuckDB
            assert columns_of(conn, "released") == probed
    finally:
        conn.unregister("released")
