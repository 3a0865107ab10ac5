"""Self time, client/server charging and critical paths on hand-built span trees."""

from __future__ import annotations

import random

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


# The metrics as first written: every join on (trace id, span id), the call shape an ordered string_agg.
# METRICS_SQL joins children to parents once, aggregates each parent's children in one pass (a list and a
# sweep only for parents of several) and sorts each shape's list; it must say the same, duplicated span
# ids, orphans and span ids reused across traces included.
REFERENCE_SQL = """
WITH sp AS (SELECT trace_id, span_id, parent_span_id, service, name, start_ns, end_ns,
                   coalesce(status_code, 0) AS status_code, coalesce(exception, false) AS exception,
                   CAST(NULL AS VARCHAR) AS pod, CAST(NULL AS VARCHAR) AS node FROM batch),
covered AS ({covered}),
kids AS (SELECT c.trace_id, c.parent_span_id AS pid,
                arg_max(CASE WHEN c.service <> p.service THEN c.service END,
                        CASE WHEN c.service <> p.service THEN c.end_ns - c.start_ns END) AS callee,
                count(*) AS n_children, bool_or(c.status_code = 2) AS child_error
         FROM sp c JOIN sp p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id GROUP BY ALL),
mt AS (SELECT sp.*, sp.end_ns - sp.start_ns AS dur, greatest({self_time}, 0) AS self_ns,
              p.service AS parent_service,
              (sp.parent_span_id IS NOT NULL AND p.span_id IS NULL) AS orphan, k.callee,
              coalesce(k.callee, sp.service) AS blame, coalesce(k.n_children, 0) AS n_children,
              coalesce(k.child_error, false) AS child_error
       FROM sp LEFT JOIN sp p ON sp.trace_id = p.trace_id AND sp.parent_span_id = p.span_id
       LEFT JOIN covered cv ON sp.trace_id = cv.trace_id AND sp.span_id = cv.span_id
       LEFT JOIN kids k ON sp.trace_id = k.trace_id AND sp.span_id = k.pid),
shapes AS (SELECT trace_id, parent_span_id AS pid,
                  string_agg(service || ':' || name, '|' ORDER BY service, name) AS sig,
                  count(*) AS k, arg_max(blame, end_ns) AS last_blame
           FROM mt WHERE parent_span_id IS NOT NULL GROUP BY trace_id, parent_span_id)
SELECT mt.*, coalesce(s.sig, '') AS shape_sig, coalesce(s.k, 0) AS shape_k, s.last_blame AS shape_last_blame
FROM mt LEFT JOIN shapes s ON mt.trace_id = s.trace_id AND mt.span_id = s.pid
"""


def test_span_metrics_equal_the_plain_formulation_on_broken_traces() -> None:
    from dsl import covered_sql, self_time_sql

    rows = []
    for t, trace in enumerate((b"\x01" * 16, b"\x02" * 16)):
        spans = [(1, None, "a", 0, 100), (2, 1, "a-b", 10, 60), (3, 1, "a", 20, 90), (3, 1, "a", 25, 95),
                 (4, 3, "b", 30, 70), (5, 3, "a-b", 40, 45), (6, 9, "c", 50, 55), (7, 4, "b", 60, 58)]
        for i, p, svc, s, e in spans[t:]:  # the second trace lacks its root: 2 and 3 are orphans there
            rows.append({"trace_id": trace, "span_id": _sid(i), "parent_span_id": _sid(p) if p else None,
                         "service": svc, "name": f"op{i % 3}", "kind": 0, "start_ns": s, "end_ns": e,
                         "status_code": 2 if i in (4, 6) else 0, "exception": False})
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    conn = duckdb.connect()
    conn.register("batch", table)
    reference = conn.sql(REFERENCE_SQL.format(
        covered=covered_sql("sp", key=("trace_id", "span_id"), ref=("trace_id", "parent_span_id")),
        self_time=self_time_sql("sp", "cv.covered"))).to_arrow_table()
    got = span_metrics(conn, table)
    order = [(c, "ascending") for c in ("trace_id", "span_id", "start_ns", "parent_service")]
    assert got.num_rows == reference.num_rows == len(rows) + 4  # in each trace, both copies of 3 parent 4 and 5
    assert got.select(reference.column_names).sort_by(order).to_pylist() == reference.sort_by(order).to_pylist()
    # ordered by service, then name: "a" before "a-b", though "a-b:…" sorts before "a:…" as text
    assert "a:op0|a:op0|a-b:op2" in {r["shape_sig"] for r in got.to_pylist()}


def _random_batch(rng: random.Random, traces: int) -> pa.Table:
    """Traces of 1-12 spans in random trees: fan-outs and single children, copies of a span id, orphans,
    children outside or inverted against their parent, now and then no service or name.  Times are
    drawn from a wide range so no two siblings end together (``arg_max`` on a tie is any row's)."""
    rows = []
    for _ in range(traces):
        trace = rng.randbytes(16)
        ids = [rng.randbytes(8) for _ in range(rng.randint(1, 12))]
        if len(ids) > 2 and rng.random() < 0.2:
            ids[rng.randrange(1, len(ids))] = ids[rng.randrange(len(ids))]
        for i, span_id in enumerate(ids):
            parent = ids[rng.randrange(i)] if i and rng.random() < 0.95 else rng.choice([None, rng.randbytes(8)])
            start = rng.randrange(10**9)
            rows.append({"trace_id": trace, "span_id": span_id, "parent_span_id": parent,
                         "service": rng.choice(["a", "b", "a-b", "c", None] if rng.random() < 0.05 else ["a", "b", "c"]),
                         "name": rng.choice(["x", "GET /y", None] if rng.random() < 0.05 else ["x", "GET /y"]),
                         "kind": 0, "start_ns": start, "end_ns": start + rng.randrange(-10**6, 10**9),
                         "status_code": rng.choice([0, 1, 2, None]), "exception": rng.choice([True, False, None])})
    rng.shuffle(rows)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def test_span_metrics_equal_the_plain_formulation_on_random_batches() -> None:
    # METRICS_SQL takes the call shape and covered time of a parent of one child without a list or a
    # sweep, and the rest in one pass over the parents of several: the same columns for every span
    conn = duckdb.connect()
    for seed in range(6):
        rng = random.Random(seed)
        got = _against_reference(conn, _random_batch(rng, rng.choice([20, 300])), seed)
        shapes = got.column("shape_k").to_pylist()
        assert 1 in shapes and max(shapes) > 1  # both kinds of parent were there


def test_last_blame_of_a_last_child_without_a_service() -> None:
    # shape_last_blame is the blame of the last child to end that has one: a last child without a
    # service is charged its callee (here through a copy of its span id in service c, calling d), and
    # one with neither leaves it to the child before it
    trace = b"\x01" * 16
    spans = [(1, None, "a", 0, 100), (2, 1, "b", 10, 50), (3, 1, None, 20, 90), (3, 9, "c", 20, 90),
             (4, 3, "d", 30, 60), (5, None, "a", 0, 100), (6, 5, "b", 10, 50), (7, 5, None, 20, 90)]
    rows = [{"trace_id": trace, "span_id": _sid(i), "parent_span_id": _sid(p) if p else None, "service": svc,
             "name": "op", "kind": 0, "start_ns": st, "end_ns": e, "status_code": 0, "exception": False}
            for i, p, svc, st, e in spans]
    got = _against_reference(duckdb.connect(), pa.Table.from_pylist(rows, schema=SCHEMA), "no service")
    last = {r["span_id"]: r["shape_last_blame"] for r in got.to_pylist()}
    assert last[_sid(1)] == "d" and last[_sid(5)] == "b"


def test_span_metrics_of_ids_of_other_lengths_equal_the_plain_formulation() -> None:
    # METRICS_SQL joins on the ids as integers (a 16-byte trace id, 8-byte span ids); a batch with ids of
    # other lengths (a corpus read from files) is joined on the blobs instead, with the same result
    conn = duckdb.connect()
    for seed, odd in ((0, "span_id"), (1, "parent_span_id"), (2, "trace_id")):
        table = _random_batch(random.Random(seed), 200)
        column = table.column(odd).to_pylist()
        column[0] = column[0][:4] if column[0] else b"\x01\x02"  # one id of another length (a parent's may be null)
        table = table.set_column(table.column_names.index(odd), odd, pa.array(column, pa.binary()))
        _against_reference(conn, table, odd)


def _against_reference(conn: duckdb.DuckDBPyConnection, table: pa.Table, case: object) -> pa.Table:
    """``span_metrics`` of ``table``, asserted equal to REFERENCE_SQL's plain formulation (row order aside)."""
    from dsl import covered_sql, self_time_sql

    conn.register("batch", table)
    reference = conn.sql(REFERENCE_SQL.format(
        covered=covered_sql("sp", key=("trace_id", "span_id"), ref=("trace_id", "parent_span_id")),
        self_time=self_time_sql("sp", "cv.covered"))).to_arrow_table()
    got = span_metrics(conn, table)
    order = [(c, "ascending") for c in reference.column_names]
    assert got.num_rows == reference.num_rows
    assert got.select(reference.column_names).sort_by(order).equals(reference.sort_by(order)), case
    return got


def test_integer_keys_are_the_ids_equality() -> None:
    # the keys are bijections of the blobs: a span id equal to another's as integers is the same bytes,
    # and one differing in any byte (the sign bit, the last byte) is a different integer
    from processor.localizer.graph import _INT_KEYS

    ids = [b"\x00" * 7 + b"\x01", b"\x01" + b"\x00" * 7, b"\x80" + b"\x00" * 7, b"\xff" * 8, b"\x7f" + b"\xff" * 7]
    traces = [b"\x00" * 15 + b"\x01", b"\x80" + b"\x00" * 15, b"\xff" * 16, b"\x01" + b"\x00" * 15]
    rows = pa.table({"trace_id": pa.array(traces + [traces[0]] * (len(ids) - len(traces)), pa.binary()),
                     "span_id": pa.array(ids, pa.binary()), "parent_span_id": pa.array([None, *ids[1:]], pa.binary())})
    conn = duckdb.connect()
    conn.register("k", rows)
    got = conn.sql(f"SELECT {_INT_KEYS['tk']}, {_INT_KEYS['sk']}, {_INT_KEYS['pk']} FROM k").fetchall()
    assert len({t for t, _, _ in got}) == len(traces) and len({s for _, s, _ in got}) == len(ids)
    assert [p for _, _, p in got] == [None, *(s for _, s, _ in got[1:])]
