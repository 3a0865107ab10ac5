"""processor.analysis.factory and .build: which analysis a config runs, and what it projects."""

from __future__ import annotations

import asyncio

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dsl import AttrRef, AttrSource, column_name
from processor.analysis.build import analysis_projection, build_analyzer
from processor.analysis.factory import pipeline_analysis
from processor.analysis.runner import LocalAnalysis
from processor.analysis.verdict import BatchVerdict
from processor.config import FaulttraceProcessorConfig
from processor.localizer.analyzer import ATTRIBUTION
from processor.receivers.decode import decode
from tests.support.harness import kv, sid, tid

FLAG = AttrRef(AttrSource.SPAN, "feature_flag.variant")


def test_configured_attributes_are_projected_and_compared_by_attribution():
    config = FaulttraceProcessorConfig(builtin_rules=False, attributes=[{"key": "feature_flag.variant"}])
    analyzer = build_analyzer(config)
    localizer = analyzer.statistical[0]
    assert FLAG in localizer.attribution and set(ATTRIBUTION) <= set(localizer.attribution)
    assert FLAG in analysis_projection(config, analyzer).refs
    analyzer.close()


def test_the_pipeline_localizer_leaves_explain_s_contrast_out():
    # why_not_first is printed by `faulttrace explain` only: the pipeline does not pay its query per batch
    analyzer = build_analyzer(FaulttraceProcessorConfig(builtin_rules=False))
    assert analyzer.statistical[0].explain_contrast is False
    analyzer.close()


def test_nothing_to_run_is_no_analysis():
    config = FaulttraceProcessorConfig(builtin_rules=False, localizer={"enabled": False}, analysis_process=False)
    assert pipeline_analysis(config) is None


def test_an_analyzer_reads_the_projected_columns_of_a_released_batch():
    seen: list[list] = []

    class Reader:
        def projection(self):
            return frozenset({FLAG})

        def analyze(self, conn, table):
            seen.append(conn.execute(f"SELECT {column_name(FLAG)} FROM {table} ORDER BY _row").fetchall())
            return BatchVerdict()

        def close(self):
            pass

    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add(resource={"attributes": [kv("service.name", "api")]}).scope_spans.add().spans
    for n, variant in ((1, "on"), (2, None)):
        span = spans.add(trace_id=tid(n), span_id=sid(n), name="op")
        if variant:
            span.attributes.append(kv("feature_flag.variant", variant))
    batch = decode(req).batch
    analysis = LocalAnalysis(Reader(), analysis_projection(FaulttraceProcessorConfig(), Reader()))
    try:
        assert asyncio.run(analysis.analyze(batch.table, batch.resources)) == BatchVerdict()
    finally:
        analysis.close()
    assert seen == [[("on",), (None,)]]
    assert isinstance(batch.table, pa.Table) and column_name(FLAG) not in batch.table.column_names


def test_a_configured_event_attribute_does_not_break_seeding_the_baseline():
    """Attribution learns span and resource values from a baseline file; an event attribute
    in the config has none there (it used to fail the localizer's start with a KeyError)."""
    from pathlib import Path

    baseline = Path(__file__).resolve().parents[1] / "data" / "checkout.json"
    config = FaulttraceProcessorConfig(builtin_rules=False, localizer={"baseline": str(baseline)}, attributes=[
        {"key": "exception.type", "source": "event", "event": "exception"}, {"key": "feature_flag.variant"}])
    analyzer = build_analyzer(config)
    localizer = analyzer.statistical[0]
    assert localizer.history.traces_seen > 0
    assert AttrRef(AttrSource.EVENT, "exception.type", event="exception") in localizer.attribution
    analyzer.close()
