"""Self time, client/server charging and critical paths on hand-built span trees."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from processor.localizer.graph import Span, children_of, critical_path, span_metrics, span_metrics_of
from processor.localizer.spans import SCHEMA

T = b"\x01" * 16


def _sid(i: int) -> bytes:
    return i.to_bytes(8, "big")


def _table(spans: list[tuple[int, int | None, str, int, int]]) -> pa.Table:
    """(id, parent, service, start ms, end ms) rows of one trace."""
    return pa.Table.from_pylist([
        {"trace_id": T, "span_id": _sid(i), "parent_span_id": _sid(p) if p else None, "service": svc,
         "name": f"op{i}", "kind": 0, "start_ns": s * 1_000_000, "end_ns": e * 1_000_000, "status_code": 0,
         "exception": False} for i, p, svc, s, e in spans], schema=SCHEMA)


def _metrics(spans: list[tuple[int, int | None, str, int, int]]) -> dict[int, dict]:
    rows = span_metrics(duckdb.connect(), _table(spans)).to_pylist()
    return {int.from_bytes(r["span_id"], "big"): r for r in rows}


def test_self_time_counts_parallel_children_once() -> None:
    m = _metrics([(1, None, "a", 0, 100), (2, 1, "a", 10, 60), (3, 1, "a", 20, 50), (4, 1, "a", 70, 80)])
    assert m[1]["self_ns"] == (100 - 50 - 10) * 1_000_000
    assert m[2]["self_ns"] == 50 * 1_000_000


def test_clock_skew_is_clipped_to_the_parent() -> None:
    # the child starts before and ends after its parent: the parent did no work of its own
    m = _metrics([(1, None, "a", 10, 50), (2, 1, "b", 5, 60)])
    assert m[1]["self_ns"] == 0
    assert m[2]["self_ns"] == 55 * 1_000_000


def test_client_span_time_is_charged_to_the_callee() -> None:
    m = _metrics([(1, None, "a", 0, 100), (2, 1, "a", 10, 90), (3, 2, "b", 30, 70)])
    assert m[2]["callee"] == "b" and m[2]["blame"] == "b"
    assert m[2]["self_ns"] == 40 * 1_000_000
    assert m[1]["blame"] == "a" and m[3]["blame"] == "b"


def test_missing_parent_makes_an_orphan_not_an_error() -> None:
    m = _metrics([(1, None, "a", 0, 100), (3, 2, "b", 30, 70)])
    assert m[3]["orphan"] and not m[1]["orphan"]
    assert m[1]["self_ns"] == 100 * 1_000_000


def _spans(rows: list[tuple[int, int | None, int, int]]) -> list[Span]:
    return [Span(_sid(i), _sid(p) if p else None, "s", f"op{i}", s, e) for i, p, s, e in rows]


def test_metrics_of_a_relation_in_place_equal_those_of_a_table() -> None:
    # the live localizer reads the released batch through a query instead of copying its columns out
    table = _table([(1, None, "front", 0, 100), (2, 1, "back", 10, 40), (3, 1, "back", 50, 90)])
    conn = duckdb.connect()
    conn.register("batch", table)
    in_place = span_metrics_of(conn, "(SELECT * FROM batch WHERE start_ns < 50000000)", table.column_names)
    copied = span_metrics(conn, table.slice(0, 2))
    assert in_place.num_rows == 2
    assert in_place.sort_by("span_id") == copied.sort_by("span_id")


def test_critical_path_sequential_siblings_are_all_on_it() -> None:
    spans = _spans([(1, None, 0, 100), (2, 1, 0, 40), (3, 1, 40, 90)])
    path = critical_path(spans[0], children_of(spans))
    assert [s.name for s in path] == ["op1", "op3", "op2"]


def test_critical_path_skips_the_parallel_sibling_that_finished_first() -> None:
    spans = _spans([(1, None, 0, 100), (2, 1, 10, 50), (3, 1, 10, 90), (4, 3, 20, 85)])
    path = critical_path(spans[0], children_of(spans))
    assert [s.name for s in path] == ["op1", "op3", "op4"]


def test_span_metrics_carry_each_spans_call_shape() -> None:
    # 1 (a) calls 2 (b) and 3 (a); 2 calls 4 (c), which ends last under 1's tree through 2's blame
    m = _metrics([(1, None, "a", 0, 100), (2, 1, "b", 10, 90), (3, 1, "a", 5, 20), (4, 2, "c", 30, 80)])
    assert (m[1]["shape_sig"], m[1]["shape_k"]) == ("a:op3|b:op2", 2)
    # the service charged when 1's tree stops after its last child: 2, a client of c, is charged to c
    assert m[1]["shape_last_blame"] == "c"
    assert (m[2]["shape_sig"], m[2]["shape_k"], m[2]["shape_last_blame"]) == ("c:op4", 1, "c")
    assert (m[4]["shape_sig"], m[4]["shape_k"], m[4]["shape_last_blame"]) == ("", 0, None)
