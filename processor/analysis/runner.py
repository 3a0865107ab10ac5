"""Running an analyzer over released batches: the analysis boundary, and analysis on a thread.

Wherever analysis runs (a thread of this process, ``LocalAnalysis``, or a
worker process, ``processor.analysis.worker``), a released batch goes through
``analyze_released``: the attributes the analyzer reads are decoded from the
span bytes, then the analyzer reads the batch in DuckDB.  A failure costs the
batch its verdict, never its spans, and is caught at the edge of whatever
runs it: ``analyze_released`` for the analyzer's own work (in the worker
process too, which must still answer its parent), ``SerialAnalysis.analyze``
for running it at all (a connection that cannot be made, a worker that
cannot be started or answered).  The release loop can then count on every
analysis resolving to a verdict, empty or not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from dsl import AttrRef, known_batch
from processor.analysis.attributes import ALL_ATTRIBUTES, Projection, Projector
from processor.analysis.protocols import RELEASED_TABLE, Analyzer, with_row_numbers
from processor.analysis.verdict import BatchVerdict
from processor.config import StorageConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

LEFT_BEHIND = ("raw", "resource_id", "scope_id")  # store columns no analyzer reads


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
        # an analyzer reading every attribute decodes the span bytes of the spans it needs
        behind = [c for c in LEFT_BEHIND if c != "raw" or ALL_ATTRIBUTES not in projector.projection.refs]
        table = table.drop_columns([c for c in behind if c in table.column_names])
        table = with_row_numbers(table)
        conn.register(RELEASED_TABLE, table)
        # what the rules would ask DuckDB of the batch (its columns, those no span has a value in,
        # whether a span failed), known from the Arrow table
        try:
            with known_batch(RELEASED_TABLE, table):
                return analyzer.analyze(conn, RELEASED_TABLE)
        finally:
            conn.unregister(RELEASED_TABLE)
    except Exception:
        log.exception("analysis failed on a batch of %d spans; it is exported without a verdict",
                      released.num_rows)
        return BatchVerdict()


NOT_RUN = "analysis could not run on a batch of %d spans; it is exported without a verdict"


def or_nothing(message: str, spans: int, fn: Callable[..., T], *args: Any) -> T | None:
    """``fn(*args)``, or None when it raises: the Analysis component's edge, where a failure is
    logged (``message`` with the batch's ``spans``) and the batch's spans are exported regardless."""
    try:
        return fn(*args)
    except Exception:
        log.exception(message, spans)
        return None


class SerialAnalysis:
    """The ``protocols.Analysis`` interface over ``analyze_now``:
    batches run one at a time, in order, on a thread of their own (the
    analyzers' state needs no locks; DuckDB and Arrow release the interpreter
    lock)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faulttrace-analysis")

    async def analyze(self, released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict:
        """The verdict on a released batch; never raises (an empty verdict when analysis cannot run)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._analyze_or_nothing,
                                                                released, resources)

    def _analyze_or_nothing(self, released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict:
        verdict = or_nothing(NOT_RUN, released.num_rows, self.analyze_now, released, resources)
        return BatchVerdict() if verdict is None else verdict

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
        self.analyzer.close()
        if self._conn is not None:
            self._conn.close()
