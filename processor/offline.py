"""Offline analysis of recorded traces (``explain``, ``test``): the pipeline's decode
and analysis stages over a file, with no servers and no waiting."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dsl import BASELINE_TABLE, Finding, RuleSet, TreeOutcome
from processor.analysis import RELEASED_TABLE, Analyzer, BatchVerdict, with_row_numbers
from processor.combine import calibrate, merge, on_rule_scale, register_baseline
from processor.decode import Projection, decode
from processor.evaluator import verdicts


@dataclass(frozen=True, slots=True)
class OfflineResult:
    spans: pa.Table            # every decoded span (store columns)
    findings: list[Finding]
    verdict: BatchVerdict
    trees: list[TreeOutcome] = field(default_factory=list)  # fault trees whose top event is not false


def span_table(requests: Iterable[ExportTraceServiceRequest], projection: Projection) -> pa.Table:
    tables = [decode(r, projection).batch.table for r in requests]
    return pa.concat_tables(tables) if tables else projection.schema.empty_table()


def analyze(requests: Iterable[ExportTraceServiceRequest], rules: RuleSet,
            localizer: Analyzer | None = None) -> OfflineResult:
    """Findings and ranked verdicts for every trace in ``requests``; with a
    ``localizer``, its rule-free candidates merged in (``processor.combine``)."""
    refs = set(rules.projection) | (set(localizer.projection()) if localizer else set())
    table = span_table(requests, Projection.of(refs))
    conn = duckdb.connect()
    try:
        conn.register(RELEASED_TABLE, with_row_numbers(table))
        registered = register_baseline(conn, [localizer]) if localizer is not None and table.num_rows else False
        evaluation = rules.evaluate_all(conn, RELEASED_TABLE) if table.num_rows else None
        if registered:
            conn.unregister(BASELINE_TABLE)
        findings = evaluation.findings if evaluation else []
        trees = evaluation.trees if evaluation else []
        verdict = verdicts(conn, RELEASED_TABLE, findings, trees) if findings or trees else BatchVerdict()
        if localizer is not None and table.num_rows:
            verdict = merge([verdict, on_rule_scale(localizer.analyze(conn, RELEASED_TABLE))])
        else:
            verdict = calibrate(verdict)  # as the pipeline annotates: confidences are probabilities
    finally:
        conn.close()
    return OfflineResult(table, findings, verdict, trees)
