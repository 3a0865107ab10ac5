"""processor.tools.firingrate: how often rules and trees fire on fault-free traces
(``faulttrace check --baseline``, the ``healthy`` ceilings of ``faulttrace test``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from dsl import load_rules
from processor.otlp.tracefile import read_requests
from processor.tools.firingrate import cli_check_baseline, diagnostics, firing_rates
from processor.tools.ruletest import run_fixture_tests

TRACES = Path(__file__).resolve().parents[2] / "rules" / "tests" / "traces"

RULES = """\
rule t.any_client {
  title "Any client span" layer infrastructure severity low confidence 0.1
  match span c where c.kind = client
}
rule t.storm {
  title "Retry storm" layer infrastructure severity medium confidence 0.5
  match span p, child c of p where c.kind = client and count(sibling s of c where s.name = c.name) >= 4
  blame p
}
rule t.weak {
  title "A client call answered 5xx" layer infrastructure severity low confidence 0.2
  match span c where c.kind = client and c.attr["http.response.status_code"] >= 500
}
tree t.failed {
  title "A request failed"
  top span r where r.is_root and r.status = error
  cause t.weak
}
"""


def baseline(tmp_path: Path, *names: str) -> Path:
    """One JSON line per fixture trace, as a collector's file exporter writes them."""
    p = tmp_path / "baseline.jsonl"
    p.write_text("".join(json.dumps(json.loads((TRACES / n).read_text())) + "\n" for n in names))
    return p


def rules_file(tmp_path: Path) -> Path:
    p = tmp_path / "t.rules"
    p.write_text(RULES)
    return p


def test_rates_per_rule_and_tree(tmp_path):
    rules = load_rules([rules_file(tmp_path)])
    rates = firing_rates(read_requests(baseline(tmp_path, "infra_retry_storm.json", "infra_two_calls.json")), rules)
    assert rates.traces == 2
    any_client, storm, weak, tree = rates.get("t.any_client"), rates.get("t.storm"), rates.get("t.weak"), rates.get("t.failed")
    assert (any_client.traces, storm.traces, storm.spans) == (2, 1, 1)
    assert any_client.spans > any_client.traces and any_client.span_rate == any_client.spans / rates.spans
    assert weak.trees == ("t.failed",) and not weak.flagged(0.01) and weak.traces >= 1
    assert tree.kind == "tree" and tree.traces >= 1
    flagged = diagnostics(rates, rules, 0.4)
    assert [(d.code, d.message.split("`")[1]) for d in flagged] == [
        ("W020", "t.any_client"), ("W020", "t.storm"), ("W021", "t.failed")]
    d = flagged[0]
    assert "`t.any_client` fires on 100.0% of fault-free traces (2 of 2)" in d.message
    assert (d.span.line, d.span.col, d.span.end_col) == (1, 6, 6 + len("t.any_client"))


def test_check_baseline_text_and_json(tmp_path):
    paths, file = [str(rules_file(tmp_path))], str(baseline(tmp_path, "infra_two_calls.json", "infra_timeout.json"))
    out = io.StringIO()
    assert cli_check_baseline(paths, file, "text", 0.01, out) == 0
    text = out.getvalue()
    assert text.startswith(f"baseline {file}: 2 traces,")
    assert "t.any_client" in text and "above the ceiling" in text and "warning[W020]" in text
    out = io.StringIO()
    assert cli_check_baseline(paths, file, "json", 0.01, out) == 0
    doc = json.loads(out.getvalue())
    assert doc["traces"] == 2 and doc["max_rate"] == 0.01
    assert {r["id"]: r["flagged"] for r in doc["rules"]}["t.any_client"] is True
    assert [t["id"] for t in doc["trees"]] == ["t.failed"]
    assert {d["code"] for d in doc["diagnostics"]} == {"W020"}


def test_check_baseline_errors(tmp_path):
    bad = tmp_path / "bad.rules"
    bad.write_text("rule x.y { title \"x\" }")
    out = io.StringIO()
    assert cli_check_baseline([str(bad)], str(baseline(tmp_path, "infra_two_calls.json")), "text", 0.01, out) == 1
    assert "error[E" in out.getvalue()
    out = io.StringIO()
    assert cli_check_baseline([str(rules_file(tmp_path))], str(tmp_path / "missing.jsonl"), "text", 0.01, out) == 1
    assert out.getvalue().startswith("error: --baseline:")
    out = io.StringIO()
    assert cli_check_baseline([str(rules_file(tmp_path))], str(tmp_path / "missing.jsonl"), "text", 5, out) == 2
    assert out.getvalue().startswith("error: --max-rate 5:")


def test_fixture_ceiling_fails_the_test_run(tmp_path):
    rules_file(tmp_path)
    baseline(tmp_path, "infra_two_calls.json", "infra_retry_storm.json")
    fixture = tmp_path / "t.test.yaml"
    fixture.write_text(f"""
rule_files: [t.rules]
tests:
  - trace: {TRACES / 'infra_two_calls.json'}
    rules: [t.storm]
    expect: []
healthy:
  traces: baseline.jsonl
  max_rate: 0.01
  rules: {{t.any_client: {{max_rate: 1}}}}
""")
    out = io.StringIO()
    assert run_fixture_tests([fixture], out) == 1
    assert "FAIL healthy traces (baseline.jsonl)" in out.getvalue()
    assert "rule t.storm fires on 1 of 2 healthy traces (50%), above its ceiling of 1%" in out.getvalue()
    assert "tree t.failed fires on 1 of 2 healthy traces (50%), above its ceiling of 1%" in out.getvalue()
    assert "t.any_client" not in out.getvalue() and "t.weak" not in out.getvalue() and out.getvalue().endswith("1 passed, 1 failed\n")
