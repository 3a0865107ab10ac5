"""processor.tools.valuetypes: what types a baseline's attributes carry, and W022 for a rule that
reads one as a type it never has (``faulttrace check --baseline``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from dsl import load_rules
from processor.otlp.tracefile import read_requests
from processor.tools.firingrate import cli_check_baseline
from processor.tools.valuetypes import ValueTypes, diagnostics

RULES = """\
rule t.code_as_int {
  title "An app code of 500 or more" layer code severity low confidence 0.1
  match span s where s.attr["app.code"] >= 500
}
rule t.code_as_text {
  title "An app code starting with 5" layer code severity low confidence 0.1
  match span s where s.attr["app.code"] starts_with "5"
}
rule t.status_as_int {
  title "A 5xx" layer infrastructure severity low confidence 0.1
  match span s where s.attr["http.response.status_code"] >= 500 and s.resource["app.tier"] = 2
}
"""


def baseline(tmp_path: Path) -> Path:
    """Two spans: `app.code` a string on both, the status code an int, `app.tier` a string on the resource."""
    def span(i: int, code: str) -> dict:
        return {"traceId": f"{i:032x}", "spanId": f"{i:016x}", "name": "GET /x", "kind": 2,
                "startTimeUnixNano": "1", "endTimeUnixNano": "2",
                "attributes": [{"key": "app.code", "value": {"stringValue": code}},
                               {"key": "http.response.status_code", "value": {"intValue": "200"}}]}
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "a"}},
                                                          {"key": "app.tier", "value": {"stringValue": "two"}}]},
                              "scopeSpans": [{"spans": [span(1, "503"), span(2, "E200")]}]}]}
    p = tmp_path / "baseline.jsonl"
    p.write_text(json.dumps(doc) + "\n")
    return p


def test_value_types_are_counted_per_place_and_key(tmp_path: Path) -> None:
    types = ValueTypes.of(read_requests(baseline(tmp_path)))
    assert types.counts[("span", "app.code")] == {"string": 2}
    assert types.counts[("span", "http.response.status_code")] == {"int": 2}
    assert types.counts[("resource", "app.tier")] == {"string": 2}  # once per span of the resource


def test_a_rule_reading_an_attribute_as_a_type_the_traffic_never_sends_is_warned(tmp_path: Path) -> None:
    p = tmp_path / "t.rules"
    p.write_text(RULES)
    rules = load_rules([p])
    found = diagnostics(rules, ValueTypes.of(read_requests(baseline(tmp_path))))
    assert [(d.code, d.message.split("`")[1], d.message.split("`")[3]) for d in found] == [
        ("W022", "t.code_as_int", "app.code"), ("W022", "t.status_as_int", "app.tier")]
    d = found[0]
    assert "reads span attribute `app.code` as double, but the baseline's 2 values of it are string (2)" in d.message
    assert (d.span.line, d.span.col) == (1, 6) and '["app.code"]:string' in d.hints[0]
    # through the command, beside the firing table
    out = io.StringIO()
    assert cli_check_baseline([str(p)], str(baseline(tmp_path)), "text", 0.01, out) == 0
    assert out.getvalue().count("warning[W022]") == 2
