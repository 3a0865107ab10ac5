"""Symptoms of a delay: every ancestor of a span blamed on the critical path waited for it."""

from __future__ import annotations

import duckdb

from processor.localizer import LocalizerAnalyzer
from tests.support import localizer_synth as synth


def test_every_ancestor_of_a_delay_on_the_critical_path_is_its_symptom() -> None:
    """A query a few ms slower than usual holds back every span above it, although none of them is
    beyond its own p99 nor spends most of its time waiting for it: each is caused by the query."""
    conn = duckdb.connect()
    analyzer = LocalizerAnalyzer()
    for seed in range(3):
        assert not synth.analyze(analyzer, conn, synth.batch(synth.spans(n=40, seed=100 + seed))).traces
    normal = synth.spans(n=40, seed=400)
    bad = synth.spans(n=8, faults=synth.Faults(slow={"db": 1.0}), seed=401)
    verdict = synth.analyze(analyzer, conn, synth.batch(normal + bad))
    blamed = 0
    for trace_id, v in verdict.traces.items():
        if v.top is None or (v.top.service, v.top.name) != ("db", "SELECT"):
            continue
        blamed += 1
        rows = {r["span_id"]: r for r in bad if r["trace_id"] == trace_id}
        ancestors, parent = set(), rows[v.top.span_id]["parent_span_id"]
        while parent in rows:
            ancestors.add(parent)
            parent = rows[parent]["parent_span_id"]
        symptoms = {s.span_id: s for s in verdict.symptoms.get(trace_id, ())}
        assert ancestors <= set(symptoms), [rows[a]["name"] for a in ancestors - set(symptoms)]
        assert all(symptoms[a].caused_by == v.top.span_id for a in ancestors)
    assert blamed >= 4
    conn.close()
