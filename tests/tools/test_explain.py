"""``faulttrace explain`` as a user runs it: a real subprocess over recorded trace files."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]  # the real `faulttrace` command in a subprocess

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = ROOT / "tests" / "data" / "checkout.json"
FAILING, HEALTHY = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174a4f2a54b5b2f2b1d"
POOL_MESSAGE = ("payments: SELECT cards raised psycopg.OperationalError: "
                "connection pool exhausted: timeout waiting for connection")

CUSTOM_RULES = """\
rule custom.home_route {
  title "The home page is always suspicious"
  layer semantic
  severity low
  confidence 0.35
  match span h
  where h.kind = server and h.attr["http.route"] = "/home"
  message "{h.service} served {h.attr['http.route']} with {count(child c of h)} child span(s)"
}
"""


def faulttrace(*args: str | Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("faulttrace")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "processor.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=ROOT)


def explain_json(*args: str | Path) -> dict:
    # Rules and fault trees alone here; the localizer's evidence has a test of its own.
    run = faulttrace("explain", "--no-localizer", "--format", "json", *args)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def without_evidence(doc: dict) -> dict:
    """The document with each root cause's evidence list, and each trace's chains and
    symptoms, taken off (checked elsewhere)."""
    for trace in doc["traces"]:
        for cause in trace["root_causes"]:
            assert cause.pop("evidence")
        assert [c["rank"] for c in trace.pop("chains")] == [c["rank"] for c in trace["root_causes"]]
        assert isinstance(trace.pop("symptoms"), list)
    return doc


@pytest.fixture(scope="module")
def custom_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "custom.rules"
    path.write_text(CUSTOM_RULES)
    return path


def test_text_shows_the_tree_with_the_root_cause_marked():
    run = faulttrace("explain", "--no-localizer", CHECKOUT)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"\d+ traces?, 1 with a root cause \(\w+ 1\); most often payments: SELECT cards \(1 trace\)",
                        lines[0]), lines[0]
    assert lines[1] == f"trace {FAILING}: 4 spans, 1 root cause(s)"
    # The tree: indentation follows parent -> child, across services.
    tree = [ln for ln in lines[1:] if re.match(r"^ *(frontend|payments): ", ln)][:4]
    assert [re.match(r"^( *)(\S+: [A-Z]+ /?\S+)", ln).groups() for ln in tree] == [
        ("  ", "frontend: GET /checkout"), ("    ", "frontend: POST /charge"),
        ("      ", "payments: POST /charge"), ("        ", "payments: SELECT cards")]
    assert tree[3] == ("        payments: SELECT cards 60.0ms ERROR  <== #1 infrastructure "
                       "code.deepest_exception,infra.connection_pool_exhausted,data.failed_db_query (0.80)")
    # the flag variant on the root span no longer competes: the fired tree request.failure explains its
    # top event (the root) by the cause, so the root is a symptom (calibrated alone: support 0.8, odds 4, 4/5)
    assert tree[0].endswith("ERROR  <- symptom of #1: fault tree request.failure fired: cut set {exception} "
                            "explains its top event")
    assert "<==" not in tree[1] and "<==" not in tree[2]
    # Before the tree, each cause's chain: the cause, then one line per rule with its message.
    i = next(n for n, ln in enumerate(lines) if ln.startswith("  #1 cause payments: SELECT cards 60.0ms ERROR  [infrastructure; "))
    assert lines[i + 1].strip() == f"code.deepest_exception: {POOL_MESSAGE}"
    assert lines[i + 2].strip().startswith("infra.connection_pool_exhausted: payments: SELECT cards could not get")
    assert lines[i + 3].strip() == "data.failed_db_query: postgresql query failed: pool timeout (no status code)"
    # ... ending with what the user saw, and why it follows
    chain_end = next(n for n in range(i, len(lines)) if lines[n].startswith("     → user saw "))
    assert lines[chain_end] == ("     → user saw frontend: GET /checkout 100.0ms ERROR  (root span; fault tree "
                                "request.failure fired: cut set {exception} explains its top event)")
    assert lines.index(tree[0]) > chain_end
    # The healthy trace: its tree, nothing marked.
    j = lines.index(f"trace {HEALTHY}: 2 spans, no root cause found")
    assert lines[j + 1:] == ["  frontend: GET /home 60.0ms", "    frontend: GET /cart 40.0ms"]


def test_json_matches_the_schema():
    doc = explain_json(CHECKOUT)
    assert list(doc) == ["traces", "services"]
    assert [t["trace_id"] for t in doc["traces"]] == [FAILING, HEALTHY]
    keys = ["rank", "span_id", "service", "name", "layer", "rules", "confidence", "message", "evidence"]
    for trace in doc["traces"]:
        assert list(trace) == ["trace_id", "root_causes", "fault_trees", "chains", "symptoms"]
        for cause in trace["root_causes"]:
            assert list(cause) == keys
            assert isinstance(cause["rank"], int) and isinstance(cause["confidence"], float)
            assert all(isinstance(r, str) for r in cause["rules"])
    (first,) = doc["traces"][0]["root_causes"]
    evidence = first.pop("evidence")  # one piece of evidence per rule (and per fault tree through it)
    assert [e["source"] for e in evidence if e["kind"] == "rule"] == first["rules"]
    assert first == {"rank": 1, "span_id": "a000000000000004", "service": "payments", "name": "SELECT cards",
                     "layer": "infrastructure",  # the pool rule and the conventions outvote the catch-all
                     "rules": ["code.deepest_exception", "infra.connection_pool_exhausted", "data.failed_db_query"],
                     "confidence": 0.8, "message": POOL_MESSAGE}
    # the chain: the cause, what the user saw (the root span, the fired tree's top event) and why
    (chain,) = doc["traces"][0]["chains"]
    assert chain["rank"] == 1 and chain["cause"] == "a000000000000004" and chain["explains"] == []
    assert chain["user_saw"] == {"span_id": "a000000000000001", "service": "frontend", "name": "GET /checkout",
                                 "error": True, "duration_ms": 100.0, "cause_rank": None, "symptom": True,
                                 "reason": "fault tree request.failure fired: cut set {exception} explains its top event"}
    assert doc["traces"][0]["symptoms"] == [{"span_id": "a000000000000001", "caused_by": "a000000000000004",
                                             "reason": chain["user_saw"]["reason"], "explained": True}]
    assert doc["traces"][1]["root_causes"] == [] and doc["traces"][1]["chains"] == []


def test_custom_rules_alone(custom_rules):
    # --rules is repeatable and may come right before FILE.
    cart = custom_rules.with_name("cart.rules")
    cart.write_text('rule custom.cart { title "cart" layer data severity info confidence 1\n'
                    '  match span c where c.name = "GET /cart" }\n')
    doc = explain_json("--no-builtin-rules", "--rules", custom_rules, "--rules", cart, CHECKOUT)
    assert without_evidence(doc) == {"services": [], "traces": [
        {"trace_id": FAILING, "root_causes": [], "fault_trees": []},
        {"trace_id": HEALTHY, "fault_trees": [], "root_causes": [
            {"rank": 1, "span_id": "b000000000000002", "service": "frontend", "name": "GET /cart",
             "layer": "data", "rules": ["custom.cart"], "confidence": round(999 / (1 + 999 + 0.35 / 0.65), 4),
             "message": "custom.cart"},  # support 1 is capped at 0.999 (odds 999) so a rival keeps a share
            {"rank": 2, "span_id": "b000000000000001", "service": "frontend", "name": "GET /home",
             "layer": "semantic", "rules": ["custom.home_route"],
             "confidence": round((0.35 / 0.65) / (1 + 999 + 0.35 / 0.65), 4),
             "message": "frontend served /home with 1 child span(s)"}]},
    ]}


def test_custom_rules_beside_the_builtin_library_from_gzipped_json_lines(tmp_path, custom_rules):
    # The same two traces, one request per line, gzip-compressed: the collector file exporter's shape.
    doc = json.loads(CHECKOUT.read_text())
    lines = [json.dumps({"resourceSpans": [rs]}) for rs in doc["resourceSpans"]]
    path = tmp_path / "export.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    got = explain_json("--rules", custom_rules, "--format", "json", path)
    by_trace = {t["trace_id"]: t["root_causes"] for t in got["traces"]}
    assert [c["span_id"] for c in by_trace[FAILING]] == ["a000000000000004"]
    assert [c["rules"] for c in by_trace[HEALTHY]] == [["custom.home_route"]]


def test_no_rules_at_all_finds_nothing():
    doc = explain_json("--no-builtin-rules", CHECKOUT)
    empty = {"root_causes": [], "fault_trees": [], "chains": [], "symptoms": []}
    assert doc == {"traces": [{"trace_id": FAILING, **empty}, {"trace_id": HEALTHY, **empty}], "services": []}


def test_bad_inputs_exit_2_with_a_message(tmp_path):
    bad_trace = tmp_path / "bad.jsonl"
    bad_trace.write_text(json.dumps(json.loads(CHECKOUT.read_text())) + "\n{oops\n")
    run = faulttrace("explain", bad_trace)
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {bad_trace}:2: ") and "Traceback" not in run.stderr
    assert run.stdout == ""

    bad_rules = tmp_path / "bad.rules"
    bad_rules.write_text('rule x.y { title "t" layer code severity high confidence 2 match span s }\n')
    run = faulttrace("explain", "--rules", bad_rules, CHECKOUT)
    assert run.returncode == 2
    assert f"{bad_rules}:1:" in run.stderr and "error[E031]" in run.stderr
    assert run.stdout == ""


def test_the_localizer_adds_its_evidence_and_a_service_ranking():
    run = faulttrace("explain", "--format", "json", CHECKOUT)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    first = doc["traces"][0]["root_causes"][0]
    assert first["span_id"] == "a000000000000004"  # the rules' verdict still leads
    kinds = {e["kind"] for e in first["evidence"]}
    assert kinds == {"rule", "localizer", "fault_tree"} or kinds == {"rule", "localizer"}
    assert any(e["source"] == "localizer.errors" for e in first["evidence"])
    assert doc["services"][0]["service"] == "payments" and doc["services"][0]["score"] > 0
    probabilities = [s["probability"] for s in doc["services"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


def test_text_ends_with_the_window_ranking_of_services():
    run = faulttrace("explain", CHECKOUT)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    at = lines.index("services, most likely origin first (across all traces of the file):")
    assert re.fullmatch(r"  1\. payments  score \d+\.\d\d  p \d\.\d\d", lines[at + 1])
    # rules alone rank no services
    assert "services, most likely" not in faulttrace("explain", "--no-localizer", CHECKOUT).stdout
