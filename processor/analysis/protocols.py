"""The interfaces of analysis: what an analyzer is, and where a pipeline runs one.

An ``Analyzer`` (the rules with their fault trees, the localizer, or both
combined) reads a batch of released spans in DuckDB and returns a
``BatchVerdict``.  An ``Analysis`` is where a pipeline's analyzer runs: on a
thread of this process (``runner.LocalAnalysis``) or in a worker process
(``worker.ProcessAnalysis``).  The batch is registered under
``RELEASED_TABLE`` with a ``_row`` column (``with_row_numbers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import duckdb
import pyarrow as pa

from dsl import AttrRef
from processor.analysis.verdict import BatchVerdict

RELEASED_TABLE = "released"  # the name analyzers read a released batch under


def with_row_numbers(table: pa.Table) -> pa.Table:
    """The batch with a dense ``_row`` column: rules key derived values on it
    instead of copying the (Arrow) batch into DuckDB first."""
    return table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))


class Analyzer(Protocol):
    """Reads released spans in DuckDB (table ``table``, with the attribute
    columns of ``projection()``); says what it found.  ``close`` releases
    what it holds (the localizer's learned baseline)."""

    def projection(self) -> frozenset[AttrRef]: ...

    def analyze(self, conn: duckdb.DuckDBPyConnection, table: str) -> BatchVerdict: ...

    def close(self) -> None: ...


class Analysis(Protocol):
    """Where a pipeline's analysis runs: it gets each released batch as the
    store kept it (``store.STORE_SCHEMA``, span bytes included) with the
    heads of the batch's resources, projects the attributes its analyzer
    reads and returns the verdict.  Batches are analyzed one at a time, in
    the order given.  It never raises: a failed analysis costs the batch its
    verdict, not its spans."""

    def projection(self) -> frozenset[AttrRef]: ...

    async def analyze(self, released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict: ...

    def close(self) -> None: ...
