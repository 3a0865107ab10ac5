"""``faulttrace explain``'s chains over a known verdict: cause → what it explains → what the user saw."""

from __future__ import annotations

import io

import pyarrow as pa

from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, Symptom, TraceVerdict, rank_candidates
from processor.tools import explain
from processor.tools.offline import OfflineResult

T, OTHER_T = b"\x07" * 16, b"\x08" * 16
AGENT, CHAT, PARSE, TOOL, ORPHAN = (bytes([0xA0 + i]) * 8 for i in range(5))
# span id, parent, service, name, start ms, end ms, error
SPANS = [
    (AGENT, None, "agent", "invoke_agent shop", 0, 12_000, True),
    (CHAT, AGENT, "agent", "chat gpt-4o", 100, 11_100, False),
    (PARSE, AGENT, "agent", "parse answer", 11_200, 11_300, True),
    (TOOL, PARSE, "agent", "validate", 11_210, 11_290, True),
    (ORPHAN, AGENT, "agent", "log", 11_400, 11_500, True),
]


def _result() -> OfflineResult:
    rows = [(T, *s) for s in SPANS] + [(OTHER_T, b"\x01" * 8, None, "web", "GET /", 0, 5, False)]
    spans = pa.table({
        "trace_id": pa.array([r[0] for r in rows], pa.binary()),
        "span_id": pa.array([r[1] for r in rows], pa.binary()),
        "parent_span_id": pa.array([r[2] for r in rows], pa.binary()),
        "service": [r[3] for r in rows], "name": [r[4] for r in rows],
        "start_ns": pa.array([r[5] * 1_000_000 for r in rows], pa.int64()),
        "end_ns": pa.array([r[6] * 1_000_000 for r in rows], pa.int64()),
        "status_code": pa.array([2 if r[7] else 0 for r in rows], pa.uint8())})
    truncated = Candidate(CHAT, "agent", "chat gpt-4o", 1, 100_000_000, 11_100_000_000, (
        Evidence("semantic.truncated_output", "chat gpt-4o stopped at its token limit (finish_reasons=length)",
                 0.9, 4.5, "semantic"),
        Evidence("agent.answer_failure", "fault tree agent.answer_failure fired: cut set {truncated}", 0.95, 4.75,
                 "semantic", kind="fault_tree", cut_set=("truncated",))))
    slow = Candidate(PARSE, "agent", "parse answer", 1, 0, 0,
                     (Evidence("localizer.latency", "self time 90 ms vs p99 2 ms", 0.3, 0.9, "", kind="localizer"),))
    symptoms = (
        Symptom(TOOL, CHAT, "rule semantic.truncated_output explains it", explained=True),
        Symptom(AGENT, CHAT, "inherited error"),
        Symptom(ORPHAN, b"\x99" * 8, "lift 3.1"),      # names a span that is no candidate
    )
    verdict = BatchVerdict({T: TraceVerdict(T, AGENT, rank_candidates([truncated, slow]))}, {T: symptoms})
    return OfflineResult(spans, [], verdict)


def test_text_chain_runs_from_the_cause_to_what_the_user_saw() -> None:
    out = io.StringIO()
    explain.write_text(_result(), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"trace {T.hex()}: 5 spans, 2 root cause(s)"
    assert lines[1] == ("  #1 cause agent: chat gpt-4o 11000.0ms  [semantic; semantic.truncated_output; "
                        "tree agent.answer_failure {truncated}] (0.90)")
    assert lines[2] == "       semantic.truncated_output: chat gpt-4o stopped at its token limit (finish_reasons=length)"
    assert lines[3] == "       agent.answer_failure: fault tree agent.answer_failure fired: cut set {truncated}"
    # innermost symptom first, the root span last as what the user saw, each with its link's evidence
    assert lines[4] == "     → explains agent: validate 80.0ms ERROR  (rule semantic.truncated_output explains it)"
    assert lines[5] == "     → user saw agent: invoke_agent shop 12000.0ms ERROR  (root span; inherited error)"
    assert lines[6] == "  #2 cause agent: parse answer 100.0ms ERROR  [no layer; localizer.latency] (0.30)"
    assert lines[7] == "       localizer.latency: self time 90 ms vs p99 2 ms"
    assert lines[8] == "     → user saw agent: invoke_agent shop 12000.0ms ERROR  (root span; not marked a symptom of this cause)"
    assert lines[9] == "  symptom naming no cause here: agent: log 100.0ms ERROR  (lift 3.1)"
    # then the tree, causes and symptoms marked
    assert lines[10] == "  agent: invoke_agent shop 12000.0ms ERROR  <- symptom of #1: inherited error"
    assert lines[11].startswith("    agent: chat gpt-4o 11000.0ms  <== #1 semantic semantic.truncated_output")
    assert lines[13] == "      agent: validate 80.0ms ERROR  <- symptom of #1: rule semantic.truncated_output explains it"
    assert lines[14] == "    agent: log 100.0ms ERROR  <- symptom: lift 3.1"
    other = lines.index(f"trace {OTHER_T.hex()}: 1 spans, no root cause found")
    assert lines[other + 1:] == ["  web: GET / 5.0ms"]


def test_json_chain_names_each_link_and_its_evidence() -> None:
    doc = explain.to_json(_result())
    trace = doc["traces"][0]
    first, second = trace["chains"]
    assert first["rank"] == 1 and first["cause"] == CHAT.hex()
    assert first["explains"] == [{"span_id": TOOL.hex(), "service": "agent", "name": "validate", "error": True,
                                  "duration_ms": 80.0, "caused_by": CHAT.hex(),
                                  "reason": "rule semantic.truncated_output explains it", "explained": True}]
    assert first["user_saw"] == {"span_id": AGENT.hex(), "service": "agent", "name": "invoke_agent shop",
                                 "error": True, "duration_ms": 12000.0, "cause_rank": None, "symptom": True,
                                 "reason": "inherited error"}
    assert second["cause"] == PARSE.hex() and second["explains"] == []
    assert second["user_saw"]["symptom"] is False
    assert [s["span_id"] for s in trace["unexplained_symptoms"]] == [ORPHAN.hex()]
    assert {s["span_id"]: s["caused_by"] for s in trace["symptoms"]} == {
        TOOL.hex(): CHAT.hex(), AGENT.hex(): CHAT.hex(), ORPHAN.hex(): "99" * 8}
    assert trace["root_causes"][0]["layer"] == "semantic"
    assert doc["traces"][1]["chains"] == [] and "unexplained_symptoms" not in doc["traces"][1]


def test_a_root_span_that_is_the_cause_is_what_the_user_saw() -> None:
    spans = explain.TraceSpans.of([{"span_id": AGENT, "parent_span_id": None, "service": "agent",
                                    "name": "invoke_agent", "start_ns": 0, "end_ns": 1, "status_code": 2}])
    cause = Candidate(AGENT, "agent", "invoke_agent", 0, 0, 1, (Evidence("r", "m", 0.5, 1.0, "code"),), rank=1)
    (chain,), orphans = explain.chains(TraceVerdict(T, AGENT, (cause,)), (), spans)
    assert chain.user_saw is not None and chain.user_saw["span_id"] == AGENT and chain.user_saw_rank == 1
    assert chain.explains == () and orphans == []
    out = io.StringIO()
    explain.write_chain(chain, out)
    assert out.getvalue().endswith("     → user saw this span: the cause is the root span\n")


def test_a_symptom_naming_another_symptom_joins_the_chain_it_leads_to() -> None:
    """A fired tree's top event (the root) explained by a span that is itself explained by the cause."""
    result = _result()
    symptoms = (Symptom(TOOL, CHAT, "rule semantic.truncated_output explains it", explained=True),
                Symptom(AGENT, TOOL, "fault tree request.failure explains its top event", explained=True),
                Symptom(ORPHAN, ORPHAN, "a loop leads nowhere"))
    verdict = BatchVerdict(result.verdict.traces, {T: symptoms})
    out = io.StringIO()
    explain.write_text(OfflineResult(result.spans, [], verdict), out)
    lines = out.getvalue().splitlines()
    assert lines[4] == "     → explains agent: validate 80.0ms ERROR  (rule semantic.truncated_output explains it)"
    assert lines[5] == ("     → user saw agent: invoke_agent shop 12000.0ms ERROR  (root span; fault tree "
                        "request.failure explains its top event; through agent: validate)")
    assert "  symptom naming no cause here: agent: log 100.0ms ERROR  (a loop leads nowhere)" in lines
    assert "  agent: invoke_agent shop 12000.0ms ERROR  <- symptom of #1: fault tree request.failure explains its top event" in lines
    chain = explain.to_json(OfflineResult(result.spans, [], verdict))["traces"][0]["chains"][0]
    assert chain["user_saw"]["symptom"] is True and chain["user_saw"]["span_id"] == AGENT.hex()
