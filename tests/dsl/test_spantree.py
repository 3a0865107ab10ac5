"""dsl.spantree: self time from the union of clipped children, under either keying of spans; the trace's root;
a span's antecedents (its causal past)."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from dsl import antecedents_sql, covered_sql, no_parent_sql, root_key_sql, self_time_sql
from dsl.spantree import clipped_sql, covered_by_fan_sql

# (row, span id, parent id, start, end) of one trace
Row = tuple[int, str, str | None, int, int]


def _self_times(rows: list[Row], keying: str) -> dict[int, int]:
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (_row BIGINT, span_id VARCHAR, parent_span_id VARCHAR, start_ns BIGINT, end_ns BIGINT)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    if keying == "rows":  # as the rule compiler keys them: a parent is the first row with its id
        conn.execute("CREATE TABLE s AS SELECT t._row, t.start_ns, t.end_ns, "
                     "(SELECT min(p._row) FROM t AS p WHERE p.span_id = t.parent_span_id) AS _parent FROM t")
        cov, on = covered_sql("s", key=("_row",), ref=("_parent",)), "c._row = s._row"
    else:  # as the localizer keys them: by span id
        conn.execute("CREATE TABLE s AS SELECT * FROM t")
        cov, on = covered_sql("s", key=("span_id",), ref=("parent_span_id",)), "c.span_id = s.span_id"
    out = conn.execute(f"SELECT s._row, {self_time_sql('s', 'c.covered')} FROM s LEFT JOIN ({cov}) AS c ON {on}")
    return dict(out.fetchall())


@pytest.mark.parametrize("keying", ["rows", "ids"])
def test_overlapping_children_count_once_and_are_clipped_to_the_parent(keying: str) -> None:
    rows = [(0, "a", None, 0, 100), (1, "b", "a", 10, 60), (2, "c", "a", 20, 50), (3, "d", "a", 90, 130),
            (4, "e", "a", 60, 60), (5, "f", "a", 150, 160), (6, "g", "zz", 0, 10)]
    assert _self_times(rows, keying) == {0: 100 - 50 - 10, 1: 50, 2: 30, 3: 40, 4: 0, 5: 10, 6: 10}


@pytest.mark.parametrize("keying", ["rows", "ids"])
def test_a_span_ending_before_it_starts_has_negative_self_time(keying: str) -> None:
    assert _self_times([(0, "a", None, 50, 40), (1, "b", "a", 40, 50)], keying) == {0: -10, 1: 10}


def test_a_duplicated_span_id_is_one_span_by_id_and_its_first_copy_by_row() -> None:
    rows = [(0, "a", None, 0, 100), (1, "a", None, 50, 200), (2, "b", "a", 0, 200)]
    # by id both copies have the child, clipped to each: it covers [0, 200), more than either copy
    assert _self_times(rows, "ids") == {0: 100 - 200, 1: 150 - 200, 2: 200}
    assert _self_times(rows, "rows") == {0: 0, 1: 150, 2: 200}


def test_covered_by_fan_is_the_sweep() -> None:
    """``covered_by_fan_sql`` (a lone child's interval without the sweep) gives ``covered_sql``'s
    values on random trees: parents of one child or several, children overlapping, outside their
    parent, empty or inverted, and keys several rows share."""
    import random

    rnd = random.Random(7)
    rows: list[tuple[int, int | None, int, int]] = []
    for i in range(3000):
        parent = rnd.choice([None, rnd.randrange(0, i), rnd.randrange(0, min(i, 300))]) if i else None
        start = (rows[parent][2] if parent is not None else 0) + rnd.randrange(-20, 200)
        end = start + rnd.choice([-5, 0, 1, rnd.randrange(0, 400)])
        rows.append((i % 2900, parent, start, end))  # keys 0..99 are shared by two rows
    conn = duckdb.connect()
    conn.execute("CREATE TABLE s (_row BIGINT, _parent BIGINT, start_ns BIGINT, end_ns BIGINT)")
    conn.executemany("INSERT INTO s VALUES (?, ?, ?, ?)", rows)
    conn.execute(f"CREATE TABLE cl AS {clipped_sql('s', ('_row',), ('_parent',))}")
    sweep = conn.execute(covered_sql("s", ("_row",), ("_parent",))).fetchall()
    fan = conn.execute(covered_by_fan_sql("cl", ("_row",))).fetchall()
    counts = dict(conn.execute("SELECT n, count(*) FROM (SELECT _row, count(*) AS n FROM cl WHERE ce > cs "
                               "GROUP BY _row) GROUP BY n").fetchall())
    assert counts.get(1, 0) > 50 and sum(v for n, v in counts.items() if n > 1) > 20  # both kinds of parent
    assert sorted(fan) == sorted(sweep)


def _root(rows: list[tuple[str, str | None, int, int]]) -> str:
    """The root span id of one trace of (span id, parent id, start, end) rows."""
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (span_id VARCHAR, parent_span_id VARCHAR, start_ns BIGINT, end_ns BIGINT)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    key = root_key_sql("s", no_parent_sql("s.parent_span_id::BLOB"), "p.span_id IS NOT NULL")
    return conn.execute(f"SELECT arg_min(s.span_id, {key}) FROM t AS s "
                        "LEFT JOIN t AS p ON p.span_id = s.parent_span_id").fetchone()[0]


def test_the_root_is_the_span_naming_no_parent_even_when_a_fragment_starts_earlier() -> None:
    assert _root([("orphan", "lost", 0, 50), ("root", None, 10, 100), ("child", "root", 5, 20)]) == "root"
    assert _root([("orphan", "lost", 0, 50), ("root", "", 10, 100)]) == "root"   # OTLP's empty parent id


def test_without_its_root_a_trace_is_headed_by_its_earliest_fragment_never_by_a_skewed_child() -> None:
    rows = [("late", "lost", 30, 90), ("skewed", "late", 5, 40), ("early", "gone", 10, 60), ("child", "early", 60, 70)]
    assert _root(rows) == "early"


def test_several_roots_give_the_earliest_then_the_one_ending_first() -> None:
    assert _root([("b", None, 10, 50), ("a", None, 20, 30)]) == "b"
    assert _root([("b", None, 10, 50), ("a", None, 10, 30)]) == "a"


def test_when_every_parent_is_present_the_earliest_span_stands_in() -> None:
    assert _root([("a", "b", 10, 50), ("b", "a", 5, 60)]) == "b"


def test_antecedents_are_earlier_siblings_their_subtrees_and_own_children_up_the_chain() -> None:
    # r ─┬ a [a1]  (0-10)         earlier sibling of b, c, d and their subtrees
    #    ├ b       (12-30)
    #    ├ e       (20-70)        overlaps c and d: its output cannot have reached them
    #    ├ c [c1 (32-40), c2 (41-50)]
    #    └ d       (61-90)
    rows = [("r", None, 0, 100), ("a", "r", 0, 10), ("a1", "a", 1, 5), ("b", "r", 12, 30), ("c", "r", 31, 60),
            ("c1", "c", 32, 40), ("c2", "c", 41, 50), ("d", "r", 61, 90), ("e", "r", 20, 70)]
    spans = pa.table({"trace_id": [b"t"] * len(rows), "span_id": [r[0].encode() for r in rows],
                      "parent_span_id": [r[1].encode() if r[1] else None for r in rows],
                      "start_ns": [r[2] for r in rows], "end_ns": [r[3] for r in rows]})
    targets = pa.table({"trace_id": [b"t", b"t", b"t"], "span_id": [b"c2", b"d", b"c"]})
    conn = duckdb.connect()
    conn.register("sp", spans)
    conn.register("tg", targets)
    got: dict[bytes, dict[bytes, int]] = {}
    for _, target, ante, distance in conn.sql(antecedents_sql("sp", "tg")).fetchall():
        got.setdefault(target, {})[ante] = distance
    assert got[b"c2"] == {b"c1": 1, b"a": 2, b"a1": 2, b"b": 2}
    assert got[b"d"] == {b"a": 1, b"a1": 1, b"b": 1, b"c": 1, b"c1": 1, b"c2": 1}
    assert got[b"c"] == {b"c1": 0, b"c2": 0, b"a": 1, b"a1": 1, b"b": 1}
