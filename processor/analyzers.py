"""Which analysis a pipeline runs, from its processor config, and where.

The analyzer: rules (with fault trees) and the rule-free localizer,
combined.  Where: in a worker process (``analysis_process``,
``processor.worker``) or in this one (``LocalAnalysis``).  Either way a
released batch goes through ``analyze_released``: the attributes the
analyzer reads (plus the configured ``attributes``) are decoded from the span
bytes, then the analyzer reads the batch in DuckDB.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pyarrow as pa

from dsl import AttrRef, AttrSource, AttrType
from processor.analysis import RELEASED_TABLE, Analysis, Analyzer, BatchVerdict, with_row_numbers
from processor.combine import CombinedAnalyzer
from processor.config import FaulttraceProcessorConfig, StorageConfig
from processor.evaluator import RuleAnalyzer
from processor.localizer import LocalizerAnalyzer
from processor.localizer.analyzer import ATTRIBUTION
from processor.project import Projection, Projector
from processor.ruleset import load_configured_rules

log = logging.getLogger(__name__)

LEFT_BEHIND = ("raw", "resource_id", "scope_id")  # store columns no analyzer reads


def configured_projection(config: FaulttraceProcessorConfig) -> set[AttrRef]:
    """The attributes the config names (``attributes``): projected for every batch, and
    compared by the localizer's attribution."""
    return {AttrRef(AttrSource(a.source), a.key, AttrType(a.type), a.event) for a in config.attributes}


def analysis_projection(config: FaulttraceProcessorConfig, analyzer: Analyzer) -> Projection:
    return Projection.of(configured_projection(config) | set(analyzer.projection()))


def analysis_connection(storage: StorageConfig) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for analysis, with the storage settings (threads, memory limit)."""
    conn = duckdb.connect()
    conn.execute(f"SET threads TO {int(storage.threads)}")
    if storage.memory_limit:
        conn.execute("SET memory_limit = ?", [storage.memory_limit])
    return conn


def analyze_released(analyzer: Analyzer, projector: Projector, conn: duckdb.DuckDBPyConnection,
                     released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict:
    """Project a released batch and run ``analyzer`` over it as ``RELEASED_TABLE``.

    The analysis boundary: a failure is logged and costs this batch its
    verdict, never its spans (they are exported without annotations)."""
    try:
        table = projector.project(released, resources)
        table = table.drop_columns([c for c in LEFT_BEHIND if c in table.column_names])
        conn.register(RELEASED_TABLE, with_row_numbers(table))
        try:
            return analyzer.analyze(conn, RELEASED_TABLE)
        finally:
            conn.unregister(RELEASED_TABLE)
    except Exception:
        log.exception("analysis failed on a batch of %d spans; it is exported without a verdict",
                      released.num_rows)
        return BatchVerdict()


class SerialAnalysis:
    """The ``processor.analysis.Analysis`` interface over ``analyze_now``:
    batches run one at a time, in order, on a thread of their own (the
    analyzers' state needs no locks; DuckDB and Arrow release the interpreter
    lock)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faulttrace-analysis")

    async def analyze(self, released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.analyze_now, released,
                                                                resources)

    def analyze_now(self, released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict:
        """``analyze`` on the calling thread."""
        raise NotImplementedError

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class LocalAnalysis(SerialAnalysis):
    """Analysis in this process, with its own DuckDB connection."""

    def __init__(self, analyzer: Analyzer, projection: Projection, storage: StorageConfig | None = None) -> None:
        super().__init__()
        self.analyzer = analyzer
        self._projector = Projector(projection)
        self._storage = storage or StorageConfig()
        self._conn: duckdb.DuckDBPyConnection | None = None

    def projection(self) -> frozenset[AttrRef]:
        return frozenset(self._projector.projection.refs)

    def analyze_now(self, released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict:
        if self._conn is None:
            self._conn = analysis_connection(self._storage)
        return analyze_released(self.analyzer, self._projector, self._conn, released, resources)

    def close(self) -> None:
        super().close()
        close = getattr(self.analyzer, "close", None)
        if close is not None:
            close()
        if self._conn is not None:
            self._conn.close()


def pipeline_analysis(config: FaulttraceProcessorConfig, analyzer: Analyzer | None = None,
                      source: str = "<config>") -> Analysis | None:
    """The analysis a pipeline runs: ``analyzer`` if given, else the configured
    one, in a worker process (``analysis_process``) or in this one; None when
    there is nothing to run.

    The rules are compiled here first either way, so a bad rule file is a
    configuration error at startup, not a dead worker."""
    if analyzer is not None:
        return LocalAnalysis(analyzer, analysis_projection(config, analyzer), config.storage)
    if not config.analysis_process:
        built = build_analyzer(config, source)
        return LocalAnalysis(built, analysis_projection(config, built), config.storage) if built else None
    rules = load_configured_rules(config, source)
    if not len(rules) and not config.localizer.enabled:
        return None
    from processor.worker import ProcessAnalysis

    return ProcessAnalysis(config)


def build_analyzer(config: FaulttraceProcessorConfig, source: str = "<config>") -> Analyzer | None:
    """The analysis in this process; None when there is nothing to run (no rules, localizer off)."""
    rules = load_configured_rules(config, source)
    rule_analyzers: list[Analyzer] = [RuleAnalyzer(rules)] if len(rules) else []
    localizers: list[Analyzer] = []
    if config.localizer.enabled:
        # the configured attributes are also compared by attribution, besides the conventional ones
        attribution = tuple(dict.fromkeys([*ATTRIBUTION, *sorted(configured_projection(config))]))
        localizers.append(LocalizerAnalyzer(config.localizer.baseline, attribution=attribution))
    if not rule_analyzers and not localizers:
        return None
    return CombinedAnalyzer(rule_analyzers, localizers)
