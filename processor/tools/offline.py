"""Offline analysis of recorded traces (``explain``, ``test``): the pipeline's decode
and analysis stages over a file, with no servers and no waiting."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dsl import Evaluation, Finding, RuleSet, TreeOutcome
from processor.analysis.attributes import Projection, span_table
from processor.analysis.combined import CombinedAnalyzer
from processor.analysis.protocols import RELEASED_TABLE, Analyzer, with_row_numbers
from processor.analysis.rules import RuleAnalyzer
from processor.analysis.verdict import BatchVerdict


@dataclass(frozen=True, slots=True)
class OfflineResult:
    spans: pa.Table            # every decoded span (store columns)
    findings: list[Finding]
    verdict: BatchVerdict
    trees: list[TreeOutcome] = field(default_factory=list)  # fault trees whose top event is not false


class _KeepingEvaluation(RuleAnalyzer):
    """The rules' analyzer, keeping its evaluation: fixture tests compare the findings and tree outcomes."""

    evaluation: Evaluation | None = None

    def analyze(self, conn: duckdb.DuckDBPyConnection, table: str) -> BatchVerdict:
        self.evaluation = self.rules.evaluate_all(conn, table)
        return self.verdict_of(conn, table, self.evaluation)


def analyze(requests: Iterable[ExportTraceServiceRequest], rules: RuleSet,
            localizer: Analyzer | None = None) -> OfflineResult:
    """Findings and ranked verdicts for every trace in ``requests``: the
    pipeline's analysis (``processor.analysis.combined.CombinedAnalyzer``: rules and fault
    trees, with a ``localizer`` its rule-free candidates merged in)."""
    rule_analyzer = _KeepingEvaluation(rules)
    combined = CombinedAnalyzer([rule_analyzer], [localizer] if localizer is not None else [])
    table = span_table(requests, Projection.of(combined.projection()))
    verdict = BatchVerdict()
    if table.num_rows:
        conn = duckdb.connect()
        try:
            conn.register(RELEASED_TABLE, with_row_numbers(table))
            verdict = combined.analyze(conn, RELEASED_TABLE)
        finally:
            conn.close()
    evaluation = rule_analyzer.evaluation
    return OfflineResult(table, list(evaluation.findings) if evaluation else [], verdict,
                         list(evaluation.trees) if evaluation else [])
