"""dsl.spantree: self time from the union of clipped children, under either keying of spans."""

from __future__ import annotations

import duckdb
import pytest

from dsl import covered_sql, self_time_sql

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
