"""Hostile literals never reach SQL text: they are bound, and they match as data."""

from __future__ import annotations

import duckdb
import pytest

from dsl.limits import MAX_STRING_CHARS
from tests.support.dsl_spans import Trace, load

HOSTILE = [
    "'); DROP TABLE spans; --",
    "\"); DROP TABLE batch; --",
    "it's a 'quote' and a \"double\"",
    "back\\slash\\\\ and \\' escaped",
    "nul\x00byte",
    "$1 $2 ? :name",
    "x" * MAX_STRING_CHARS,  # the longest literal allowed
    "ünïcödé ☃ \u2028",
]


def _escape(s: str) -> str:
    """Rule-language string literal for ``s``."""
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", "\\0").replace("\n", "\\n")
    return '"' + out + '"'


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v[:20]))
def test_hostile_literal_is_data(rules_from, value):
    lit = _escape(value)
    text = (f'list bad = [{lit}, "other"]\nconst c = {lit}\n'
            f'rule t.r {{\n title {lit}\n layer code\n severity low\n confidence 0.5\n'
            f'  match span e where e.name = {lit} and e.attr["app.k"] = c and e.name in bad\n'
            f'    and e.name contains {lit} and e.name starts_with {lit} and e.status_message != {lit}\n'
            f'  message {lit}\n}}\n')
    rs = rules_from(text)
    (compiled,) = rs.rules
    assert value not in compiled.sql
    t = Trace()
    t.span(value, attrs={"app.k": value}, status_message="fine")
    t.span("innocent", attrs={"app.k": "innocent"})
    conn = duckdb.connect()
    conn.execute("CREATE TABLE spans (x INT)")
    load(conn, [t], rs.projection)
    (finding,) = rs.evaluate(conn, "batch")
    assert finding.message == value and finding.span_id == t.spans[0].span_id
    assert {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()} == {"spans", "batch"}


def test_hostile_regex_is_a_bound_pattern(rules_from):
    rs = rules_from('rule t.r {\n title "t"\n layer code\n severity low\n confidence 0.5\n'
                    "  match span e where e.name =~ \"'\\\\); DROP TABLE batch; --\"\n}\n")
    t = Trace()
    t.span("x'); DROP TABLE batch; --")
    conn = duckdb.connect()
    load(conn, [t], rs.projection)
    assert len(rs.evaluate(conn, "batch")) == 1
    assert conn.execute("SELECT count(*) FROM batch").fetchone() == (1,)


def test_hostile_table_name_is_quoted(rules_from):
    rs = rules_from('rule t.r {\n title "t"\n layer code\n severity low\n confidence 0.5\n match span e\n}\n')
    conn = duckdb.connect()
    name = 'b"; DROP TABLE keep; --'
    conn.execute("CREATE TABLE keep (x INT)")
    t = Trace()
    t.span("a")
    load(conn, [t], rs.projection, table=name)
    assert len(rs.evaluate(conn, name)) == 1
    assert conn.execute("SELECT count(*) FROM keep").fetchone() == (0,)


def test_hostile_attribute_keys_never_reach_sql(rules_from):
    key = "k\"]'); DROP TABLE batch; --"
    rs = rules_from('rule t.r {\n title "t"\n layer code\n severity low\n confidence 0.5\n'
                    f'  match span e where e.attr[{_escape(key)}] = "v"\n}}\n')
    (ref,) = rs.projection
    assert ref.key == key
    assert "DROP" not in rs.rules[0].sql
    t = Trace()
    t.span("a", attrs={key: "v"})
    conn = duckdb.connect()
    load(conn, [t], rs.projection)
    assert len(rs.evaluate(conn, "batch")) == 1
