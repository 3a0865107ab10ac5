"""``faulttrace check`` and ``faulttrace test`` as a rule author runs them: real subprocesses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dsl.fixtures import find_fixture_files, load_fixture_file

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]  # the real `faulttrace` command in a subprocess

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"
CHECKOUT = ROOT / "tests" / "data" / "checkout.json"

BAD_RULES = """\
rule data.slow {
  title "Slow"
  layer data
  severity medium
  confidence 0.7
  match span q
  where q.durration > 1s
}

rule data.other { title "x" layer dat severity high confidence 0.5 match span s where s.name = "x" }
"""


def faulttrace(*args: str | Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("faulttrace")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "processor.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=ROOT)


# --- check ------------------------------------------------------------------------------


def test_check_builtin_library_is_clean():
    run = faulttrace("check", "rules/")
    assert run.returncode == 0, run.stdout + run.stderr
    m = re.fullmatch(r"ok: (\d+) rule\(s\)(?:, \d+ fault tree\(s\))? in (\d+) file\(s\)\n", run.stdout)
    assert m, run.stdout
    assert int(m[1]) >= 15 and int(m[2]) == len(list(RULES.glob("*.rules")))


def test_check_reports_every_error_with_position_and_caret(tmp_path):
    path = tmp_path / "bad.rules"
    path.write_text(BAD_RULES)
    run = faulttrace("check", path)
    assert run.returncode == 1
    out = run.stdout.splitlines()
    # Both errors, not just the first, each as path:line:col: error[Exxx]: message.
    headers = [ln for ln in out if re.match(rf"{re.escape(str(path))}:\d+:\d+: ", ln)]
    assert headers == [f"{path}:7:11: error[E011]: unknown span field `durration`",
                       f"{path}:10:35: error[E031]: invalid layer `dat`"]
    # Under each header: the source line, then carets exactly under the offending text.
    for header, word in zip(headers, ("durration", "dat ")):
        i = out.index(header)
        source, carets = out[i + 2], out[i + 3]
        gutter, _, code = source.partition(" | ")
        assert code in BAD_RULES.splitlines()
        col = code.index(word) + 1
        assert int(header.split(":")[2]) == col
        caret_start = carets.index("^")
        assert caret_start == len(gutter) + 3 + col - 1
        assert carets[caret_start:].strip() == "^" * len(word.strip())
    assert "  = hint: did you mean `duration`?" in out
    assert "  = hint: did you mean `data`?" in out
    assert "2 error(s), 0 warning(s)" in out


def test_check_json_format(tmp_path):
    path = tmp_path / "bad.rules"
    path.write_text(BAD_RULES)
    run = faulttrace("check", "--format", "json", path)
    assert run.returncode == 1
    diags = json.loads(run.stdout)
    assert [(d["code"], d["severity"], d["path"], d["line"], d["col"], d["end_col"]) for d in diags] == [
        ("E011", "error", str(path), 7, 11, 20), ("E031", "error", str(path), 10, 35, 38)]
    assert "did you mean `duration`?" in diags[0]["hints"]


def test_check_warnings_do_not_fail(tmp_path):
    path = tmp_path / "warn.rules"
    path.write_text('macro unused(s) = s.status = error\n'
                    'rule t.ok { title "ok" layer code severity low confidence 0.5 match span s where s.name = "x" }\n')
    run = faulttrace("check", path)
    assert run.returncode == 0, run.stdout
    assert re.search(rf"^{re.escape(str(path))}:1:\d+: warning\[W003\]", run.stdout, re.M), run.stdout


def test_check_missing_path_is_an_error(tmp_path):
    run = faulttrace("check", "--format", "json", tmp_path / "nope.rules")
    assert run.returncode == 1
    assert [d["code"] for d in json.loads(run.stdout)] == ["E040"]


# --- test -------------------------------------------------------------------------------


def test_builtin_fixtures_pass():
    fixtures = [load_fixture_file(f) for f in find_fixture_files([RULES])]
    cases = sum(len(f.cases) + (f.healthy is not None) for f in fixtures)  # a healthy ceiling counts as one
    assert cases >= 30
    run = faulttrace("test", "rules/")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1] == f"{cases} passed, 0 failed"
    assert "FAIL" not in run.stdout and "ERROR" not in run.stdout


def test_failing_fixture_prints_a_readable_diff(tmp_path):
    fixture = {
        "rule_files": [str(RULES / "common.rules"), str(RULES / "code.rules"), str(RULES / "data.rules")],
        "tests": [
            {"name": "the pool error is blamed on the query", "trace": str(CHECKOUT),
             "rules": ["code.deepest_exception"],
             "expect": [{"rule": "code.deepest_exception", "span": {"name": "SELECT cards", "service": "payments"},
                         "message": "OperationalError"}]},
            {"name": "blames the wrong span", "trace": str(CHECKOUT), "rules": ["code.deepest_exception"],
             "expect": [{"rule": "code.deepest_exception", "span": "POST /charge"}]},
            {"name": "expects another message", "trace": str(CHECKOUT), "rules": ["data.failed_db_query"],
             "expect": [{"rule": "data.failed_db_query", "span": {"id": "a000000000000004"},
                         "message": "deadlock"}]},
            {"name": "must not fire but does", "trace": str(CHECKOUT), "rules": ["data.failed_db_query"],
             "expect": []},
        ],
    }
    path = tmp_path / "wrong.test.yaml"
    path.write_text(yaml.safe_dump(fixture, sort_keys=False))
    run = faulttrace("test", path)
    assert run.returncode == 1
    out = run.stdout
    assert out.splitlines()[-1] == "1 passed, 3 failed"
    assert "FAIL the pool error" not in out
    blamed = "id=a000000000000004 name='SELECT cards' service='payments'"
    assert (f"FAIL blames the wrong span (checkout.json)\n"
            f"  - expected code.deepest_exception on span name='POST /charge'\n"
            f"  + unexpected code.deepest_exception on span {blamed}: "
            f"'payments: SELECT cards raised psycopg.OperationalError: "
            f"connection pool exhausted: timeout waiting for connection'\n") in out
    assert (f"FAIL expects another message (checkout.json)\n"
            f"  ~ data.failed_db_query on span {blamed}: message 'postgresql query failed: pool timeout (no status code)' "
            f"does not contain 'deadlock'\n") in out
    assert (f"FAIL must not fire but does (checkout.json)\n"
            f"  + unexpected data.failed_db_query on span {blamed}: ") in out
    assert out.count(f"{path}:\n") == 3  # each failure names its fixture file


def test_broken_fixture_is_an_error_not_a_crash(tmp_path):
    good = {"rule_files": [str(RULES / "common.rules"), str(RULES / "code.rules")],
            "tests": [{"name": "missing trace", "trace": "nope.json", "expect": []}]}
    (tmp_path / "a.test.yaml").write_text(yaml.safe_dump(good))
    (tmp_path / "b.test.yaml").write_text(yaml.safe_dump({"rule_files": ["nope.rules"], "tests": []}))
    run = faulttrace("test", tmp_path)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "0 passed, 2 failed"
    assert any(ln.startswith(f"ERROR {tmp_path / 'a.test.yaml'}: missing trace: ") and "nope.json" in ln
               for ln in lines), run.stdout
    assert any(ln.startswith(f"ERROR {tmp_path / 'b.test.yaml'}: ") for ln in lines), run.stdout


def test_check_baseline_on_the_library():
    run = faulttrace("check", "--baseline", RULES / "tests" / "traces" / "healthy_external_api.json", "rules/",
                     "--format", "json")
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(run.stdout)
    assert doc["traces"] == 1 and len(doc["rules"]) >= 40 and len(doc["trees"]) >= 8
    assert not any(r["flagged"] for r in doc["rules"] + doc["trees"]) and doc["diagnostics"] == []
