"""Statements whose rows are read as Arrow every batch, run from relations kept between batches.

``conn.sql`` binds a statement to make a relation, and reading the relation
binds it again; a relation kept runs its query anew on the tables as they
are each time (a batch registered under the same name, a sketch table
replaced), so keeping one saves a bind per statement per batch (~1-2 ms each
on the bench's batch).  The localizer reads its batch through one
(``analyzer``), the history its learned baseline (``history``).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from dsl.api import parsed


class Reads:
    """Relations kept per statement and parameters, on the connection read last."""

    LIMIT = 32  # statements kept (a localizer's differ only with the batch's columns)

    def __init__(self) -> None:
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._relations: dict[tuple[str, tuple[tuple[str, object], ...]], duckdb.DuckDBPyRelation] = {}

    def rows(self, conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        """The rows of ``sql`` with ``params`` on ``conn``."""
        if conn is not self._conn or len(self._relations) >= self.LIMIT:
            self._conn, self._relations = conn, {}
        key = (sql, tuple(sorted((params or {}).items())))
        rel = self._relations.get(key)
        if rel is None:
            rel = self._relations[key] = conn.sql(parsed(sql), params=params)
        return rel.to_arrow_table()
