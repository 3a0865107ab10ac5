"""Fault trees on the processor side: ranking, annotation and explain JSON,
through the built-in library and a shipped fixture trace."""

from __future__ import annotations

from pathlib import Path

from dsl import load_rules
from processor.annotator import annotations
from processor.otlp.tracefile import read_requests
from processor.tools import explain
from processor.tools.offline import analyze

ROOT = Path(__file__).resolve().parents[2]
POOL = ROOT / "rules" / "tests" / "traces" / "infra_pool.json"
UNEXPLAINED = ROOT / "rules" / "tests" / "traces" / "tree_unexplained_failure.json"


def _result(path: Path):
    return analyze(read_requests(path), load_rules([ROOT / "rules"]))


def test_explain_json_lists_fired_trees_with_cut_sets_and_spans():
    doc = explain.to_json(_result(POOL))
    (trace,) = doc["traces"]
    trees = {t["id"]: t for t in trace["fault_trees"]}
    assert set(trees) == {"request.failure", "database.degradation"}
    db = trees["database.degradation"]
    assert db == {"id": "database.degradation", "fired": True, "confidence": 0.95,
                  "cut_sets": [["failed_query"], ["pool_exhausted"]], "spans": ["0000000000000002"], "unknown": []}
    # fired trees come first, the strongest first
    assert trace["fault_trees"][0]["fired"]


def test_unknown_evidence_is_reported_without_firing():
    doc = explain.to_json(_result(UNEXPLAINED))
    (trace,) = doc["traces"]
    assert trace["root_causes"] == []
    (tree,) = [t for t in trace["fault_trees"] if t["id"] == "request.failure"]
    assert tree["fired"] is False and tree["spans"] == []
    assert tree["confidence"] == round(1 - 0.98 * 0.95 * 0.99, 4)
    assert set(tree["unknown"]) == {"pool_exhausted", "upstream_timeout", "null_deref"}


def test_fired_tree_annotates_blamed_span_and_root():
    result = _result(POOL)
    (verdict,) = result.verdict.traces.values()
    top = verdict.top
    assert top is not None and top.fault_tree is not None
    # the tree's evidence enters the ranking: the candidate's score is the tree's
    assert top.score == max(t.score for t in verdict.fault_trees if t.fired)
    adds = annotations(result.verdict)
    blamed = adds[(verdict.trace_id, top.span_id)]
    assert blamed.attributes["rca.fault_tree"] == verdict.fired_tree.tree_id
    assert blamed.attributes["rca.cut_set"] in (["exception"], ["failed_query"], ["pool_exhausted"])
    tree_events = [e for e in blamed.events if "rca.fault_tree" in e.attributes]
    assert {e.attributes["rca.fault_tree"] for e in tree_events} == {"request.failure", "database.degradation"}
    root = adds[(verdict.trace_id, verdict.root_span_id)]
    assert root.attributes["rca.verdict.fault_tree"] == "request.failure"


def test_explain_text_names_the_trees():
    import io
    out = io.StringIO()
    explain.write_text(_result(POOL), out)
    text = out.getvalue()
    assert "fault tree database.degradation fired (0.95): cut set {failed_query} or {pool_exhausted}" in text
