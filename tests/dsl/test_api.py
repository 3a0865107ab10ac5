"""dsl.api: loading rule sets, projection, errors, `faulttrace check`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dsl import AttrRef, AttrSource, AttrType, RuleError, check_paths, cli_check, load_rules

GOOD = '''rule t.good {
  title "t"
  layer data
  severity medium
  confidence 0.7
  match span q where q.attr["db.system.name"] = "redis" and q.resource["k8s.pod.name"] = "p"
  message "{q.event['exception']['exception.type']} {q.self_time}"
}
'''
BAD = 'rule t.bad {\n  title "t"\n  layer code\n  severity low\n  confidence 0.1\n  match span e where e.nope > 1\n}\n'
WARN = 'list unused = [1]\n'


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "good.rules").write_text(GOOD)
    (tmp_path / "sub" / "warn.rules").write_text(WARN)
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_load_rules_from_a_directory(tree):
    rs = load_rules([tree])
    assert rs.ids == ("t.good",)
    assert [w.code for w in rs.warnings] == ["W003"]
    assert rs.projection == frozenset({
        AttrRef(AttrSource.SPAN, "db.system.name", AttrType.STRING),
        AttrRef(AttrSource.SPAN, "db.system", AttrType.STRING),
        AttrRef(AttrSource.RESOURCE, "k8s.pod.name", AttrType.STRING),
        AttrRef(AttrSource.EVENT, "exception.type", AttrType.STRING, "exception"),
    })
    assert {"self_time", "depth"} <= rs.needs and "ancestors" not in rs.needs
    assert rs.columns[:3] == ("trace_id", "span_id", "parent_span_id") and len(rs.columns) == 14


def test_globs_and_select(tree):
    rs = load_rules([str(tree / "**" / "*.rules")])
    assert rs.select(["t.good"]).ids == ("t.good",) and rs.select([]).ids == ()


def test_errors_raise_with_every_diagnostic(tree):
    (tree / "bad.rules").write_text(BAD)
    with pytest.raises(RuleError) as info:
        load_rules([tree])
    assert [d.code for d in info.value.diagnostics] == ["E011", "W003"]
    assert "bad.rules:6:24: error[E011]" in str(info.value)


def test_missing_paths_are_diagnostics(tmp_path):
    assert [d.code for d in check_paths([tmp_path / "nope.rules", str(tmp_path / "*.none")])] == ["E040", "E040"]


def test_cli_check_text_and_exit_codes(tree):
    out = io.StringIO()
    assert cli_check([tree / "good.rules"], out=out) == 0
    assert out.getvalue() == "ok: 1 rule(s) in 1 file(s)\n"
    out = io.StringIO()
    assert cli_check([tree], out=out) == 0  # warnings only
    assert "warning[W003]" in out.getvalue()
    (tree / "bad.rules").write_text(BAD)
    out = io.StringIO()
    assert cli_check([tree], out=out) == 1
    assert "error[E011]: unknown span field `nope`" in out.getvalue()


def test_cli_check_json(tree):
    (tree / "bad.rules").write_text(BAD)
    out = io.StringIO()
    assert cli_check([tree], fmt="json", out=out) == 1
    codes = [(d["code"], d["severity"], d["line"], d["col"]) for d in json.loads(out.getvalue())]
    assert codes == [("E011", "error", 6, 24), ("W003", "warning", 1, 6)]


def test_an_empty_rule_set_evaluates_to_nothing(tmp_path):
    import duckdb

    (tmp_path / "defs.rules").write_text("macro m(s) = s.depth > 1\n")
    rs = load_rules([tmp_path])
    assert len(rs) == 0 and rs.evaluate(duckdb.connect(), "nope") == []


def test_regex_problems_come_from_re2_with_positions(tmp_path):
    (tmp_path / "r.rules").write_text(BAD.replace("e.nope > 1", 'e.name =~ "a\\\\Z" or e.name =~ "\\\\p{Greek}+"'))
    (d,) = check_paths([tmp_path])
    assert (d.code, d.span.line, d.span.col) == ("E024", 6, 32) and "\\Z" in d.message
