"""SpanStore: the one owner of the DuckDB connection and of every buffered span.

Spans wait here, one row each (``dsl.SPAN_COLUMNS``, projected attributes, the
span's encoded bytes and its resource/scope group ids), until the assembler
releases their trace.  Resource and scope heads are stored once per group.

Memory: DuckDB keeps deleted rows until their row group is rewritten, so a
single table under constant insert/delete churn holds about twice its live
data.  Spans therefore go into a ring of *generation* tables: inserts go to
the newest; a generation whose rows are all released is dropped whole (its
memory returns at once); an old generation holding only a few stragglers has
them moved into the newest and is dropped too.

Every DuckDB call runs on the store's own single worker thread (DuckDB work
stays off the event loop, and one thread means no locking); the async methods
are the public interface.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import duckdb
import pyarrow as pa

from processor.decode import Projection
from processor.model import ReleasedSpans, SpanBatch

log = logging.getLogger(__name__)
T = TypeVar("T")

RELEASED_TABLE = "released"  # the view rules run over while a batch is evaluated


@dataclass(slots=True)
class _Generation:
    number: int
    rows: int = 0   # rows ever inserted
    live: int = 0   # rows not yet released

    @property
    def table(self) -> str:
        return f"spans_g{self.number}"


class SpanStore:
    """Buffered spans in DuckDB (in memory, or in a file for durability)."""

    def __init__(self, projection: Projection, path: str | None = None, memory_limit: str | None = None,
                 generation_rows: int = 200_000) -> None:
        self.projection = projection
        self._path = path
        self._memory_limit = memory_limit
        self._generation_rows = generation_rows
        self._executor: ThreadPoolExecutor | None = None
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._gens: list[_Generation] = []
        self._known_resources: set[int] = set()
        self._known_scopes: set[int] = set()
        self.buffered_spans = 0

    # --- lifecycle -----------------------------------------------------------

    async def open(self) -> dict[bytes, int]:
        """Open the database; returns the span count per trace already buffered (file storage)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faulttrace-store")
        return await self._run(self._open)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        assert self._executor is not None, "store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> dict[bytes, int]:
        conn = duckdb.connect(self._path or ":memory:")
        self._conn = conn
        conn.execute("SET threads TO 2")
        if self._memory_limit:
            conn.execute("SET memory_limit = ?", [self._memory_limit])
        conn.execute("CREATE TABLE IF NOT EXISTS resources (id BIGINT PRIMARY KEY, head BLOB NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS scopes (id BIGINT PRIMARY KEY, head BLOB NOT NULL)")
        self._known_resources = {r[0] for r in conn.execute("SELECT id FROM resources").fetchall()}
        self._known_scopes = {r[0] for r in conn.execute("SELECT id FROM scopes").fetchall()}
        return self._recover()

    def _recover(self) -> dict[bytes, int]:
        """Adopt generation tables a previous process left in a file database."""
        conn = self._conn
        assert conn is not None
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'spans_g%' AND NOT temporary"
        ).fetchall()]
        expected = [c for c, _ in self.projection.columns_sql()]
        traces: dict[bytes, int] = {}
        for name in sorted(names, key=lambda n: int(n.removeprefix("spans_g"))):
            cols = [r[0] for r in conn.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
                [name]).fetchall()]
            if cols != expected:
                # The projection changed since: rebuild the table in the current shape,
                # with NULL for attributes that were not extracted then.
                select = ", ".join(c if c in cols else f"NULL AS {c}" for c in expected)
                conn.execute(f"CREATE TEMP TABLE migrate AS SELECT {select} FROM {name}")
                conn.execute(f"DROP TABLE {name}")
                self._create_table(name)
                conn.execute(f"INSERT INTO {name} SELECT * FROM migrate")
                conn.execute("DROP TABLE migrate")
            gen = _Generation(int(name.removeprefix("spans_g")))
            gen.rows = gen.live = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            self._gens.append(gen)
            for tid, n in conn.execute(f"SELECT trace_id, count(*) FROM {name} GROUP BY ALL").fetchall():
                traces[tid] = traces.get(tid, 0) + n
        self.buffered_spans = sum(g.live for g in self._gens)
        if self.buffered_spans:
            log.info("recovered %d buffered spans of %d traces from %s", self.buffered_spans, len(traces),
                     self._path)
        return traces

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _create_table(self, name: str) -> None:
        assert self._conn is not None
        cols = ", ".join(f"{c} {t}" for c, t in self.projection.columns_sql())
        self._conn.execute(f"CREATE TABLE {name} ({cols})")

    # --- writes --------------------------------------------------------------

    async def append(self, batch: SpanBatch) -> None:
        """Insert a decoded batch; returns once the spans are in the store."""
        if batch.span_count:
            await self._run(self._append, batch)

    def _append(self, batch: SpanBatch) -> None:
        conn = self._conn
        assert conn is not None
        self._add_groups("resources", self._known_resources, batch.resources)
        self._add_groups("scopes", self._known_scopes, batch.scopes)
        gen = self._current_generation()
        conn.register("incoming", batch.table)
        try:
            conn.execute(f"INSERT INTO {gen.table} SELECT * FROM incoming")
        finally:
            conn.unregister("incoming")
        gen.rows += batch.span_count
        gen.live += batch.span_count
        self.buffered_spans += batch.span_count

    def _add_groups(self, table: str, known: set[int], groups: dict[int, bytes]) -> None:
        new = {gid: head for gid, head in groups.items() if gid not in known}
        if not new:
            return
        assert self._conn is not None
        rows = pa.table({"id": pa.array(list(new), pa.int64()), "head": pa.array(list(new.values()), pa.binary())})
        self._conn.register("new_groups", rows)
        try:
            self._conn.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM new_groups")
        finally:
            self._conn.unregister("new_groups")
        known.update(new)

    def _current_generation(self) -> _Generation:
        if not self._gens or self._gens[-1].rows >= self._generation_rows:
            number = self._gens[-1].number + 1 if self._gens else 1
            gen = _Generation(number)
            self._create_table(gen.table)
            self._gens.append(gen)
        return self._gens[-1]

    # --- release -------------------------------------------------------------

    async def release(self, trace_ids: Iterable[bytes],
                      evaluate: Callable[[duckdb.DuckDBPyConnection, str], T] | None = None,
                      ) -> tuple[ReleasedSpans, T | None]:
        """Remove the traces' spans from the store and hand them back.

        ``evaluate(conn, table)``, if given, runs on the store thread while the
        released spans are visible as ``table`` (rules and localization read
        them there, vectorized); its result is returned beside the spans.
        """
        ids = list(trace_ids)
        return await self._run(self._release, ids, evaluate)

    def _release(self, ids: list[bytes], evaluate: Callable[[duckdb.DuckDBPyConnection, str], T] | None,
                 ) -> tuple[ReleasedSpans, T | None]:
        conn = self._conn
        assert conn is not None
        conn.register("release_ids", pa.table({"trace_id": pa.array(ids, pa.binary())}))
        parts: list[pa.Table] = []
        try:
            for gen in self._gens:
                if gen.live == 0:
                    continue
                part = conn.sql(f"DELETE FROM {gen.table} WHERE trace_id IN (SELECT trace_id FROM release_ids) "
                                "RETURNING *").to_arrow_table()
                gen.live -= part.num_rows
                if part.num_rows:
                    parts.append(part)
        finally:
            conn.unregister("release_ids")
        released = pa.concat_tables(parts) if parts else self.projection.schema.empty_table()
        self.buffered_spans -= released.num_rows
        verdict: T | None = None
        if evaluate is not None and released.num_rows:
            conn.register(RELEASED_TABLE, released)
            try:
                verdict = evaluate(conn, RELEASED_TABLE)
            finally:
                conn.unregister(RELEASED_TABLE)
        spans = self._released_spans(released, len(ids))
        self._collect_generations()
        return spans, verdict

    def _released_spans(self, released: pa.Table, trace_count: int) -> ReleasedSpans:
        resource_ids = released.column("resource_id").to_pylist()
        scope_ids = released.column("scope_id").to_pylist()
        return ReleasedSpans(
            trace_ids=released.column("trace_id").to_pylist(),
            span_ids=released.column("span_id").to_pylist(),
            raw=released.column("raw").to_pylist(),
            resource_ids=resource_ids,
            scope_ids=scope_ids,
            resources=self._heads("resources", set(resource_ids)),
            scopes=self._heads("scopes", set(scope_ids)),
            trace_count=trace_count,
        )

    def _heads(self, table: str, ids: set[int]) -> dict[int, bytes]:
        if not ids:
            return {}
        assert self._conn is not None
        self._conn.register("wanted", pa.table({"id": pa.array(list(ids), pa.int64())}))
        try:
            rows = self._conn.execute(f"SELECT id, head FROM {table} WHERE id IN (SELECT id FROM wanted)").fetchall()
        finally:
            self._conn.unregister("wanted")
        return dict(rows)

    def _collect_generations(self) -> None:
        """Drop emptied generations; fold a nearly empty old one into the newest."""
        conn = self._conn
        assert conn is not None
        newest = self._gens[-1] if self._gens else None
        for gen in list(self._gens):
            if gen is newest:
                continue
            if gen.live == 0:
                conn.execute(f"DROP TABLE {gen.table}")
                self._gens.remove(gen)
            elif gen.live * 8 < gen.rows and newest is not None and newest.live + gen.live < self._generation_rows:
                # A few long-lived traces keep this generation's memory pinned: move them.
                conn.execute(f"INSERT INTO {newest.table} SELECT * FROM {gen.table}")
                newest.rows += gen.live
                newest.live += gen.live
                conn.execute(f"DROP TABLE {gen.table}")
                self._gens.remove(gen)
        if self.buffered_spans == 0 and (self._known_resources or self._known_scopes):
            # Nothing buffered: no head is referenced (the cheap case of _gc_groups).
            conn.execute("DELETE FROM resources")
        conn.execute("DELETE FROM scopes")
        self._known_resources.clear()
        self._known_scopes.clear()

    async def collect_garbage(self) -> None:
        """Delete group heads that no buffered span refers to any more (run now and then)."""
        await self._run(self._gc_groups)

    def _gc_groups(self) -> None:
        conn = self._conn
        assert conn is not None
        tables = [g.table for g in self._gens]
        for table, known, col in (("resources", self._known_resources, "resource_id"),
                                  ("scopes", self._known_scopes, "scope_id")):
            used = " UNION ".join(f"SELECT DISTINCT {col} FROM {t}" for t in tables) or "SELECT NULL::BIGINT"
            gone = conn.execute(f"DELETE FROM {table} WHERE id NOT IN ({used}) RETURNING id").fetchall()
            known.difference_update(r[0] for r in gone)

    # --- introspection -------------------------------------------------------

    async def memory_bytes(self) -> int:
        """DuckDB's own count of the memory it holds (tables, indexes, buffers)."""
        return await self._run(self._memory_bytes)

    def _memory_bytes(self) -> int:
        assert self._conn is not None
        return int(self._conn.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
                                      ).fetchone()[0])

    async def run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn(conn)`` on the store thread (for components that query the store)."""
        assert self._conn is not None
        return await self._run(fn, self._conn)
