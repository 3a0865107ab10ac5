"""Silent causes: an improbable value in a failing span's causal past explains the failure when
the window shows the lift; normal noise explains nothing."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from dsl import column_name
from processor.analysis.attributes import ALL_ATTRIBUTES, long_array
from processor.localizer import LocalizedBatch, LocalizerAnalyzer
from processor.localizer.silent import wilson_upper
from tests.support import localizer_synth as synth

ALL = column_name(ALL_ATTRIBUTES)
Entries = list[tuple[str, str, str | None, float | None]]


@pytest.fixture
def conn() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    yield c
    c.close()


class _Shop:
    """GET /product: a query for the product's rows, then rendering them.  ``rows`` is what the
    query returns; rendering fails (exception) when told to."""

    def __init__(self, seed: int, via_client: bool = False) -> None:
        self.via_client = via_client  # the query runs in a catalog service behind a client span
        self.rng = random.Random(seed)
        self.rows: list[dict[str, Any]] = []
        self.attrs: list[Entries] = []
        self.t = 1_700_000_000_000.0

    def _id(self) -> bytes:
        return self.rng.getrandbits(64).to_bytes(8, "big")

    def _span(self, trace: bytes, parent: bytes | None, service: str, name: str, start: float, end: float,
              attrs: Entries, error: bool = False) -> bytes:
        sid = self._id()
        self.rows.append({"trace_id": trace, "span_id": sid, "parent_span_id": parent, "service": service,
                          "name": name, "kind": 0, "start_ns": int(start * 1e6), "end_ns": int(end * 1e6),
                          "status_code": 2 if error else 0, "exception": error})
        self.attrs.append(attrs)
        return sid

    def trace(self, rows: int, fail: bool, attempts: int = 1) -> None:
        """One request; the query is run ``attempts`` times one after another (a retry loop)."""
        trace = self.rng.getrandbits(128).to_bytes(16, "big")
        t = self.t
        self.t += 100.0
        j = self.rng.uniform
        root = self._span(trace, None, "web", "GET /product", t, t + 10, [("http.route", "string", "/product", None)],
                          error=fail)
        q_start = t + 1
        q_end = q_start + j(1.5, 2.5) / attempts
        parent = root
        if self.via_client:
            parent = self._span(trace, root, "web", "GET catalog", t + 0.5, q_start + (q_end - q_start) * attempts + 0.05,
                                [("http.request.method", "string", "GET", None)])
        for _ in range(attempts):
            self._span(trace, parent, "web", "SELECT products", q_start, q_end,
                       [("db.system", "string", "postgresql", None), ("db.rows", "int", None, float(rows))])
            q_start, q_end = q_end, q_end + (q_end - q_start)
        self._span(trace, root, "web", "render", q_end + 0.1, q_end + 0.1 + j(0.8, 1.2),
                   [("template", "string", "product.html", None)], error=fail)

    def batch(self) -> pa.Table:
        rows = self.rows
        out = synth.batch(rows)
        out = out.add_column(out.num_columns - 1, ALL, long_array(self.attrs))
        self.rows, self.attrs = [], []
        return out


def _learned(shop: _Shop, conn: duckdb.DuckDBPyConnection, zero_share: float = 0.0, **kw: Any) -> LocalizerAnalyzer:
    """An analyzer that has seen 240 healthy traces; ``zero_share`` of their queries return no rows."""
    analyzer = LocalizerAnalyzer(**kw)
    for _ in range(4):
        for _ in range(60):
            shop.trace(0 if shop.rng.random() < zero_share else shop.rng.randint(3, 20), fail=False)
        assert not synth.analyze(analyzer, conn, shop.batch()).traces
    return analyzer


def _by_name(verdict: LocalizedBatch, shop_rows: list[dict[str, Any]]) -> dict[bytes, str]:
    return {r["span_id"]: r["name"] for r in shop_rows}


def _incident(shop: _Shop, conn: duckdb.DuckDBPyConnection) -> tuple[dict[bytes, str], LocalizedBatch]:
    """After a healthy baseline, a window of 40 healthy traces and 6 whose query returns
    nothing and whose rendering then fails: span names and the verdict."""
    analyzer = _learned(shop, conn)
    for _ in range(40):
        shop.trace(shop.rng.randint(3, 20), fail=False)
    for _ in range(6):
        shop.trace(0, fail=True)
    names = _by_name(LocalizedBatch(), shop.rows)
    verdict = synth.analyze(analyzer, conn, shop.batch())
    assert len(verdict.traces) == 6
    return names, verdict


def test_zero_rows_then_a_failing_caller_blames_the_query(conn: duckdb.DuckDBPyConnection) -> None:
    names, verdict = _incident(_Shop(1), conn)
    for trace_id, v in verdict.traces.items():
        top = v.candidates[0]
        assert names[top.span_id] == "SELECT products"
        assert "localizer.silent" in top.statistical
        assert any("db.rows=0, below its usual range" in e.message for e in top.evidence)
        assert top.layer == "data"
        assert all(names[c.span_id] != "render" for c in v.candidates)
        symptoms = {names[s.span_id]: s for s in verdict.symptoms[trace_id]}
        assert symptoms["render"].explained and symptoms["render"].caused_by == top.span_id
        assert "more often" in symptoms["render"].reason
        assert symptoms["GET /product"].caused_by == top.span_id   # the error the caller inherited


def test_the_spans_that_relayed_the_empty_result_point_at_the_query(conn: duckdb.DuckDBPyConnection) -> None:
    # the query sits behind a client call that succeeded: it carried nothing to the failing render
    names, verdict = _incident(_Shop(1, via_client=True), conn)
    for trace_id, v in verdict.traces.items():
        top = v.candidates[0]
        assert names[top.span_id] == "SELECT products"
        symptoms = {names[s.span_id]: s for s in verdict.symptoms[trace_id]}
        assert symptoms["GET catalog"].caused_by == top.span_id and not symptoms["GET catalog"].explained
        assert symptoms["render"].caused_by == top.span_id


def test_of_retried_queries_all_returning_nothing_the_first_attempt_explains(
        conn: duckdb.DuckDBPyConnection) -> None:
    # Three attempts of the query explain the failing render equally well: the first is blamed in
    # every trace (as a retry loop's first failure is), not whichever DuckDB's threads returned
    # first.  The batch lists each trace's spans latest first, so the table's order is not it.
    shop = _Shop(1)
    analyzer = _learned(shop, conn)
    conn.execute("SET threads TO 4")
    for _ in range(40):
        shop.trace(shop.rng.randint(3, 20), fail=False)
    for _ in range(6):
        shop.trace(0, fail=True, attempts=3)
    shop.rows.reverse()
    shop.attrs.reverse()
    first = {}
    for r in sorted(shop.rows, key=lambda r: r["start_ns"], reverse=True):
        if r["name"] == "SELECT products":
            first[r["trace_id"]] = r["span_id"]
    verdict = synth.analyze(analyzer, conn, shop.batch())
    assert len(verdict.traces) == 6
    for trace_id, v in verdict.traces.items():
        assert v.candidates[0].span_id == first[trace_id]
        assert "localizer.silent" in v.candidates[0].statistical


def test_zero_rows_that_healthy_traffic_shows_explain_nothing(conn: duckdb.DuckDBPyConnection) -> None:
    shop = _Shop(2)
    analyzer = _learned(shop, conn, zero_share=0.2)   # an empty result page is normal here
    for _ in range(40):
        shop.trace(0 if shop.rng.random() < 0.2 else shop.rng.randint(3, 20), fail=False)
    for _ in range(6):
        shop.trace(0, fail=True)
    names = _by_name(LocalizedBatch(), shop.rows)
    verdict = synth.analyze(analyzer, conn, shop.batch())
    assert len(verdict.traces) == 6
    for trace_id, v in verdict.traces.items():
        assert names[v.candidates[0].span_id] == "render"
        assert not any(s.explained for s in verdict.symptoms.get(trace_id, ()))


def _noisy_window(shop: _Shop) -> None:
    """Zero rows are new, but most are handled, and rendering fails as often without them."""
    for _ in range(40):
        shop.trace(0, fail=False)
        shop.trace(shop.rng.randint(3, 20), fail=False)
    for _ in range(3):
        shop.trace(0, fail=True)
        shop.trace(shop.rng.randint(3, 20), fail=True)


def test_an_abnormal_value_after_which_failures_are_no_likelier_explains_nothing(
        conn: duckdb.DuckDBPyConnection) -> None:
    shop = _Shop(3)
    analyzer = _learned(shop, conn)   # the baseline never saw zero rows
    _noisy_window(shop)
    names = _by_name(LocalizedBatch(), shop.rows)
    verdict = synth.analyze(analyzer, conn, shop.batch())
    assert len(verdict.traces) == 6
    for v in verdict.traces.values():
        assert names[v.candidates[0].span_id] == "render"


def test_without_lift_the_abnormal_antecedent_explains_regardless(conn: duckdb.DuckDBPyConnection) -> None:
    shop = _Shop(3)
    analyzer = _learned(shop, conn, lift=False)
    _noisy_window(shop)
    names = _by_name(LocalizedBatch(), shop.rows)
    verdict = synth.analyze(analyzer, conn, shop.batch())
    tops = [names[v.candidates[0].span_id] for v in verdict.traces.values()]
    assert sorted(tops) == ["SELECT products"] * 3 + ["render"] * 3


def test_without_silent_abnormality_the_failing_span_stays_the_candidate(conn: duckdb.DuckDBPyConnection) -> None:
    shop = _Shop(1)
    analyzer = _learned(shop, conn, silent=False)
    for _ in range(40):
        shop.trace(shop.rng.randint(3, 20), fail=False)
    for _ in range(6):
        shop.trace(0, fail=True)
    names = _by_name(LocalizedBatch(), shop.rows)
    verdict = synth.analyze(analyzer, conn, shop.batch())
    assert {names[v.candidates[0].span_id] for v in verdict.traces.values()} == {"render"}
    assert {v.candidates[0].layer for v in verdict.traces.values()} == {"code"}


def test_a_handful_of_traces_against_a_noisy_control_is_not_enough() -> None:
    from processor.localizer.silent import Abnormality, Window, lift

    cause = Abnormality(b"t", b"a", "s", "q", "k", "value", "x", 0.001, 1000.0, "never seen")
    w = Window(occurs={("s", "b"): {bytes([i]) for i in range(100)}},
               errors={("s", "b"): {bytes([i]) for i in range(30)}})
    w.shows[cause.event] = {bytes([0]), bytes([1])}
    # two traces show it and fail, but 28 of 98 fail without it: no lift worth a cause
    value, _, window = lift(w, cause, ("s", "b"), "error", 0.0, 1000.0)
    assert window == (2, 2, 28, 98)
    assert value < 2.0
    assert wilson_upper(0, 0) == 1.0


@pytest.mark.parametrize("value", [1.7976931348623157e308, -1.7e308, float("inf"), float("nan")])
def test_extreme_numbers_in_an_attribute_do_not_cost_the_batch_its_analysis(
        conn: duckdb.DuckDBPyConnection, value: float) -> None:
    # found by the receivers' fuzzer: one span's double near the largest finite one made the
    # bucket overflow and the whole batch, every client's traces, went out without a verdict
    shop = _Shop(3)
    analyzer = _learned(shop, conn)
    for _ in range(20):
        shop.trace(shop.rng.randint(3, 20), fail=False)
    shop.trace(value, fail=False)  # type: ignore[arg-type]
    for _ in range(6):
        shop.trace(0, fail=True)
    verdict = synth.analyze(analyzer, conn, shop.batch())
    assert len(verdict.traces) == 6  # the incident is still found, and the batch was learned
    synth.analyze(analyzer, conn, shop.batch())


def _zero_row_weight(analyzer: LocalizerAnalyzer) -> float:
    num = analyzer.history.attributes().num.to_pylist()
    return sum(r["w"] for r in num if r["name"] == "SELECT products" and r["key"] == "db.rows" and r["b"] == 0)


def test_a_lasting_fault_does_not_teach_the_baseline_its_values(conn: duckdb.DuckDBPyConnection) -> None:
    """Attribute values are learned from traffic without a failure: window after window of zero-row
    queries followed by a failing request, even learned at full weight (learn_suspect=1), leave the
    baseline without zero rows, and the query is still explained; zero rows in requests that do not
    fail are learned."""
    shop = _Shop(5)
    analyzer = _learned(shop, conn, learn_suspect=1.0)
    names = _by_name(LocalizedBatch(), [])
    for _ in range(4):
        for _ in range(40):
            shop.trace(shop.rng.randint(3, 20), fail=False)
        for _ in range(12):
            shop.trace(0, fail=True)
        names = {**names, **_by_name(LocalizedBatch(), shop.rows)}
        verdict = synth.analyze(analyzer, conn, shop.batch())
        assert _zero_row_weight(analyzer) == 0.0
    assert len(verdict.traces) == 12
    assert all(names[v.candidates[0].span_id] == "SELECT products" for v in verdict.traces.values())
    for _ in range(40):
        shop.trace(0 if shop.rng.random() < 0.2 else shop.rng.randint(3, 20), fail=False)
    synth.analyze(analyzer, conn, shop.batch())
    assert _zero_row_weight(analyzer) > 0.0
