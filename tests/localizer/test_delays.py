"""Delays in large call graphs: peers and wire time, co-location, the hub discount, and why the second
service is not first — on the demo's deep topology (``processor.demo.deep``) and on small tables."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from processor.demo import deep
from processor.localizer import SOURCES, Baseline, rank_services, read_spans, span_metrics
from processor.localizer.contrast import why_not_first
from processor.localizer.evidence import ServiceEvidence
from processor.localizer.graph import placement_refs
from processor.localizer.shift import explained_by_node
from processor.localizer.variability import CHUNKS, null_scores
from processor.localizer.window import ServiceScore, usual_share, window_pods


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deep") / "ds"
    kinds = deep.kinds_named(["network-delay", "cpu-contention"])
    deep.write_dataset(out, seed=5, traces_per_case=60, cases_per_kind=1, baseline_traces=200, kinds=kinds)
    return out


def _rank(dataset: Path, case: str, sources: tuple[str, ...] = SOURCES) -> tuple[str, list[ServiceScore]]:
    conn = duckdb.connect()
    base_metrics = span_metrics(conn, read_spans(dataset / "baseline" / "traces.jsonl.gz", placement_refs()))
    null = null_scores(conn, base_metrics, sources)
    metrics = span_metrics(conn, read_spans(dataset / "cases" / case / "traces.jsonl.gz", placement_refs()))
    ranking = rank_services(conn, metrics, Baseline.learn(conn, base_metrics), sources, null)
    label = json.loads((dataset / "cases" / case / "label.json").read_text())["root_cause"]["service"]
    return label, ranking


def test_span_metrics_carry_pod_and_node(dataset: Path) -> None:
    conn = duckdb.connect()
    m = span_metrics(conn, read_spans(dataset / "baseline" / "traces.jsonl.gz", placement_refs())).to_pylist()
    assert all(r["pod"].startswith(r["service"] + "-") and r["node"] in deep.NODES for r in m)
    bare = span_metrics(conn, read_spans(dataset / "baseline" / "traces.jsonl.gz")).to_pylist()
    assert {r["pod"] for r in bare} == {None}


@pytest.mark.parametrize("case", ["network-delay-1", "cpu-contention-1"])
def test_the_delayed_service_comes_first_not_its_callers(dataset: Path, case: str) -> None:
    label, ranking = _rank(dataset, case)
    assert ranking[0].service == label, [(r.service, round(r.score, 2)) for r in ranking[:4]]


def test_network_delay_is_charged_to_the_callee_pod_by_its_wire_time(dataset: Path) -> None:
    label, ranking = _rank(dataset, "network-delay-1")
    peers = [e for e in ranking[0].evidence if e.source == "peers"]
    assert peers and "slower than its peers" in peers[0].message
    # without wire time the delay stays with the callers' client spans: the callee scores less
    _, without = _rank(dataset, "network-delay-1", tuple(s for s in SOURCES if s != "wire_time"))
    score = {r.service: r.score for r in without}
    assert score.get(label, 0.0) < ranking[0].score


def test_pod_shifts_read_once_rank_as_read_inside(dataset: Path) -> None:
    # the live localizer reads the window's pod shifts once and hands them to the ranking
    conn = duckdb.connect()
    base = Baseline.learn(conn, span_metrics(conn, read_spans(dataset / "baseline" / "traces.jsonl.gz",
                                                               placement_refs())))
    metrics = span_metrics(conn, read_spans(dataset / "cases" / "cpu-contention-1" / "traces.jsonl.gz",
                                            placement_refs()))
    with base.beside(conn, metrics):
        pods = window_pods(conn, SOURCES)
        assert window_pods(conn, tuple(s for s in SOURCES if s != "peers")) == []
    assert any(p.peer > 0 for p in pods)
    given = rank_services(conn, metrics, base, SOURCES, pods=pods)
    assert given == rank_services(conn, metrics, base, SOURCES)


def test_colocation_charges_a_node_to_its_pod_slowed_most() -> None:
    slowed = {("a", "a-1", "n1"): 1.2, ("b", "b-1", "n1"): 0.3, ("c", "c-1", "n1"): 0.2, ("d", "d-1", "n2"): 0.9}
    seen = [*slowed, ("e", "e-1", "n1"), ("f", "f-1", "n2")]
    assert explained_by_node(slowed, seen) == {"b-1": "a-1", "c-1": "a-1"}
    # one slowed pod on its node is no node's doing; nor are two on a node with fewer than three pods
    assert explained_by_node({("a", "a-1", "n1"): 1.0}, seen) == {}
    assert explained_by_node({("a", "a-1", "n3"): 1.0, ("b", "b-1", "n3"): 0.5}, [("a", "a-1", "n3"),
                                                                               ("b", "b-1", "n3")]) == {}


def test_hub_discount_counts_a_score_by_the_healthy_windows_it_beats(dataset: Path) -> None:
    assert usual_share((0.0, 0.1, 0.4, 0.8), 0.5) == 0.25
    assert usual_share((0.0, 0.1), 0.5) == 0.0 and usual_share((), 0.5) == 0.0
    conn = duckdb.connect()
    base = span_metrics(conn, read_spans(dataset / "baseline" / "traces.jsonl.gz", placement_refs()))
    null = null_scores(conn, base, SOURCES)
    assert null and all(len(v) == CHUNKS and list(v) == sorted(v) for v in null.values())
    # healthy windows are not spotless: something looks abnormal in some of them, nothing in most
    assert any(v[-1] > 0 for v in null.values())
    assert null_scores(conn, base.slice(0, 10), SOURCES) == {}   # too few traces: no null


def test_why_not_first_names_the_callee_that_explains_the_caller() -> None:
    a = ServiceScore("ledger", 1.0, (ServiceEvidence("latency", "ledger", 1.0, ""),))
    b = ServiceScore("wallet", 0.4, (ServiceEvidence("latency", "wallet", 0.4, ""),))
    c = ServiceScore("geo", 0.1, (ServiceEvidence("peers", "geo", 0.3, ""),
                                  ServiceEvidence("hub_discount", "geo", -0.2, "as abnormal in healthy windows")))
    lines = why_not_first([a, b, c], {("wallet", "ledger"): 0.96})
    assert lines[0] == ("wallet's delay is explained by its callee ledger: 96% of its excess time is inside "
                        "calls to ledger")
    assert lines[1] == "geo is as abnormal in healthy windows: its evidence counts 0.10, below ledger's 1.00"
    d = ServiceScore("fraud", 0.3, (ServiceEvidence("latency", "fraud", 0.3, ""),))
    assert why_not_first([a, d], {("fraud", "ledger"): 0.2}) == [
        "ledger scores 1.00 (latency +1.00), fraud 0.30 (latency +0.30)"]


def test_a_slow_span_is_a_delay_beyond_its_baselines_range_or_with_the_window_behind_it() -> None:
    from processor.localizer.blame import SUPPORTED, _delay

    row = {"self_ns": 90e6, "self_max": 100e6, "base_n": 400}        # slower than p99, within what was seen
    assert _delay(row, None) == ""
    assert _delay(row, ServiceScore("a", 0.25, ())) == ""              # support 0.2: a healthy fluctuation
    # support 1/2, one fully abnormal place: a delay if another trace bears it out (``_corroborate``)
    assert _delay(row, ServiceScore("a", 1.0, ())) == SUPPORTED
    assert _delay({**row, "base_n": 68}, ServiceScore("a", 1.0, ())) == ""    # a p99 of 68: not yet one
    assert _delay({"self_ns": 120e6, "self_max": 100e6, "base_n": 69}, None) == "delay"   # never seen that slow
    # ... in 68 observations, whose p99 is more likely than not their largest: no delay by itself
    assert _delay({"self_ns": 120e6, "self_max": 100e6, "base_n": 68}, None) == ""


def test_the_windows_support_makes_a_delay_only_where_another_trace_is_slow_there_too() -> None:
    from processor.localizer.blame import LATENCY_SOURCE, SUPPORTED, _Blame, _corroborate, _Gathered

    def trace(trace_id: bytes, service: str, failure: str, beyond_p99: bool = True) -> _Gathered:
        b = _Blame({"span_id": trace_id + b"s"}, service, beyond_p99=beyond_p99)
        b.messages.append((LATENCY_SOURCE, "slow", 0.9, failure))
        return _Gathered(trace_id, None, {}, {trace_id + b"s": b})

    def failures(t: _Gathered) -> list[str]:
        return [f for b in t.blames.values() for *_, f in b.messages]

    alone = [trace(b"a", "cart", SUPPORTED)]          # a batch of one trace: its window is itself
    _corroborate(alone)
    assert failures(alone[0]) == [""]
    pair = [trace(b"a", "cart", SUPPORTED), trace(b"b", "cart", "")]   # another trace slow at cart
    _corroborate(pair)
    assert failures(pair[0]) == ["delay"] and failures(pair[1]) == [""]
    # another trace slow elsewhere, or at cart only within its p99 (a slow pod's median), bears nothing out
    apart = [trace(b"a", "cart", SUPPORTED), trace(b"b", "shipping", ""), trace(b"c", "cart", "", beyond_p99=False)]
    _corroborate(apart)
    assert failures(apart[0]) == [""]
    beyond = [trace(b"a", "cart", "delay")]           # beyond the baseline's range needs no one else
    _corroborate(beyond)
    assert failures(beyond[0]) == ["delay"]
