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
    assert {t for t in trees if trees[t]["fired"]} == {"request.failure", "database.degradation"}
    assert not trees["service.crash"]["fired"]  # unknown: a restart and a timeout it cannot tell apart
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


TRUNCATED = ROOT / "rules" / "tests" / "traces" / "sem_truncated_parse_error.json"


def test_a_fired_trees_cause_outranks_the_failure_it_explains():
    """The issue's example: a `chat` turn cut at max_tokens (finish_reasons = length, 11 s), then the
    parser raises JSONDecodeError.  `agent.answer_failure` fires with cut set {truncated}: the truncated
    chat is the root cause, the parse error (and the agent's failed run) its symptoms."""
    result = _result(TRUNCATED)
    (verdict,) = result.verdict.traces.values()
    names = {s: n for s, n in zip(result.spans.column("span_id").to_pylist(), result.spans.column("name").to_pylist())}
    assert [names[c.span_id] for c in verdict.candidates] == ["chat gpt-4o"]
    top = verdict.top
    assert top.rank == 1 and top.layer == "semantic"
    assert {"semantic.llm_output_truncated", "semantic.truncated_output_then_failure"} <= set(top.rules)
    tree = next(t for t in verdict.fault_trees if t.tree_id == "agent.answer_failure")
    assert tree.fired and tree.cut_sets == (("truncated",),)
    symptoms = {names[s.span_id]: s for s in result.verdict.symptoms[verdict.trace_id]}
    assert set(symptoms) == {"parse_answer", "invoke_agent travel"}
    assert all(s.explained and s.caused_by == top.span_id for s in symptoms.values())
    adds = annotations(result.verdict)
    parse = next(s for s, n in names.items() if n == "parse_answer")
    assert adds[(verdict.trace_id, parse)].attributes["rca.symptom"] is True
    assert adds[(verdict.trace_id, parse)].attributes["rca.caused_by"] == top.span_id.hex()
    assert "rca.root_cause" not in adds[(verdict.trace_id, parse)].attributes


def test_a_fired_tree_alone_makes_its_top_span_a_symptom(tmp_path):
    """Without `explains`: the spans of the fired cut set outrank the top event's span, which is
    explained by the best of them."""
    (tmp_path / "t.rules").write_text('''
rule t.truncated { title "truncated" layer semantic severity low confidence 0.3
  match span l where l.attr["gen_ai.response.finish_reasons"] contains "length" }
rule t.failed { title "failed" layer code severity high confidence 0.9
  match span e where e.status = error and not exists(child c of e where c.status = error) }
tree t.answer { title "answer failed" top rule t.failed cause t.truncated }
''')
    result = analyze(read_requests(TRUNCATED), load_rules([tmp_path]))
    (verdict,) = result.verdict.traces.values()
    chat, parse = bytes.fromhex("0000000000000002"), bytes.fromhex("0000000000000003")
    assert [c.span_id for c in verdict.candidates] == [chat]
    (symptom,) = result.verdict.symptoms[verdict.trace_id]
    assert (symptom.span_id, symptom.caused_by, symptom.explained) == (parse, chat, True)
