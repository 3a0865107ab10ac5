"""SpanStore: every buffered span, and (with ``storage.path``) their DuckDB journal.

Spans wait here, one row each (``dsl.SPAN_COLUMNS``, the span's encoded bytes
and its resource/scope group ids: ``STORE_SCHEMA``), until the
assembler releases their trace; resource and scope heads are kept once per
group.  Attributes are not columns here: analysis decodes the ones it reads
from the released spans' bytes (``processor.analysis.attributes``).

Rows live in Arrow record batches that DuckDB reads in place.  Measured on
the 2-core machine, inserting a request's spans into a DuckDB table costs
3-6 µs a row (about a third of the whole per-span budget at 60k spans/s) and
DuckDB keeps deleted rows until their row group is rewritten, so a table under
constant insert/delete churn holds about twice its live data; keeping the
decoded Arrow batches costs nothing to insert and exactly their size in
memory.  Released spans are selected with Arrow's vectorized ``is_in`` and
handed back as an Arrow table too, which analysis reads (``processor.analysis``).

A span's bytes are most of what it holds (~510 of ~630 B a span in the bench's
requests), and nothing reads them before the span leaves: each appended batch
keeps them packed, concatenated and LZ4-compressed as one block
(``_Chunk``), and only its other columns as Arrow arrays; a release
unpacks the blocks of the batches it takes rows from (the block is
decompressed whole; the spans handed back are the bytes as received).  Two
reasons, both measured with the bench's requests: the bytes compress 8.6:1
(0.14 µs a span to compress, 0.03 to decompress), and the builder that
decoding fills grows its buffers by doubling, so that pyarrow's allocator
(mimalloc, which shrinks a block in place) kept ~260 B a span more than the
buffers' size, which packing copies out of.

Batches are grouped into *generations*: appends go to the newest; a
generation whose spans are all released is dropped whole; an old one holding
only a few stragglers (long traces) is compacted to them.

With a journal file (``storage.path``, by default in the user's state
directory) the store is also durable: every batch is journaled into a DuckDB
file (table ``spans`` plus the group heads) before it is acknowledged, a span
leaves it once it is delivered (``forget``, called as soon as every exporter
is done with the payload that carried it), and a restart recovers what was
still buffered or undelivered: delivery is at least once.  Each delete scans
the journal's table (about 12 ms for 150k rows, measured, whatever the number
of keys), so delivered spans are gathered for ``forget_delay`` and deleted
together; a crash re-sends at most what was delivered in that last moment, and
``close`` deletes what is still gathered, so a clean stop re-sends nothing.
DuckDB locks the file: a second process opening it gets ``JournalError``.

All work on buffered spans and every DuckDB call runs on the store's own
worker thread (off the event loop, and one thread needs no locking; Arrow and
DuckDB release the interpreter lock, so it overlaps decoding); the async
methods are the interface.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dsl import SPAN_COLUMNS
from processor.model import RELEASED_COLUMNS, ReleasedSpans, SpanBatch

log = logging.getLogger(__name__)
T = TypeVar("T")

ARROW_TYPES: dict[str, pa.DataType] = {
    "BLOB": pa.binary(),
    "VARCHAR": pa.string(),
    "UTINYINT": pa.uint8(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR[]": pa.list_(pa.string()),
    "BIGINT[]": pa.list_(pa.int64()),
    "DOUBLE[]": pa.list_(pa.float64()),
}
# Columns after the intrinsics and projections: where the span came from and its bytes.
STORAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("resource_id", "BIGINT"),
    ("scope_id", "BIGINT"),
    ("raw", "BLOB"),
)
# What the store keeps of a span: its intrinsics, where it came from and its bytes.
STORE_SCHEMA = pa.schema([pa.field(name, ARROW_TYPES[sql]) for name, sql in (*SPAN_COLUMNS, *STORAGE_COLUMNS)])
_RAW = STORE_SCHEMA.get_field_index("raw")
_TRACE_ID = STORE_SCHEMA.get_field_index("trace_id")  # the same in META_SCHEMA (before ``raw``)
META_SCHEMA = STORE_SCHEMA.remove(_RAW)  # the columns a buffered span keeps as Arrow arrays (all but its bytes)
_MAX_COMBINED = 1 << 30  # bytes of released spans above which their column stays in chunks (int32 offsets)
RAW_CODEC = "lz4_raw"  # spans' bytes while buffered: fast both ways (see the module docstring)
_COLUMNS_SQL = ", ".join(f"{c} {t}" for c, t in (*SPAN_COLUMNS, *STORAGE_COLUMNS))  # the journal's spans table
KEY_COLUMNS = ("trace_id", "span_id")  # what ``forget`` is given of each delivered span
_PATH_KEY = "processors.faulttrace.storage.path"  # named in errors about the journal file
FORGET_DELAY = 0.1  # seconds delivered spans are gathered before one delete takes them from the journal
# Scalars given to compute functions are typed: pyarrow converts an untyped Python value anew on
# each call, and its conversion tries to import dateutil, which costs ~60 µs where it is not installed.
NO_SEPARATOR = pa.scalar(b"", pa.binary())
_SPREAD = pa.scalar(0x9E3779B97F4A7C15, pa.uint64())  # odd: 2**64 / the golden ratio


def released_from_rows(trace_ids: list[bytes], span_ids: list[bytes], parent_span_ids: list[bytes | None],
                       raw: list[bytes], resource_ids: list[int], scope_ids: list[int], resources: dict[int, bytes],
                       scopes: dict[int, bytes], trace_count: int) -> ReleasedSpans:
    """Released spans given as row-aligned lists of ``model.RELEASED_COLUMNS`` (the store's
    other columns null), as the store would hand them over (tests build them so)."""
    given = dict(zip(RELEASED_COLUMNS, (trace_ids, span_ids, parent_span_ids, resource_ids, scope_ids, raw)))
    n = len(raw)
    table = pa.table([pa.array(given[f.name], f.type) if f.name in given else pa.nulls(n, f.type)
                      for f in STORE_SCHEMA], schema=STORE_SCHEMA)
    return ReleasedSpans(table, resources, scopes, trace_count)


def _offsets(raw: pa.Array) -> pa.Array:
    """The int32 offsets of a binary array (its rows + 1), as the array's own slice of them."""
    return pa.Array.from_buffers(pa.int32(), len(raw) + 1, [None, raw.buffers()[1]], offset=raw.offset)


def _data_size(raw: pa.Array) -> int:
    """Bytes of a binary array's values."""
    offsets = _offsets(raw)
    return offsets[len(raw)].as_py() - offsets[0].as_py()


def incomplete_traces(rows: pa.Table, numbers: pa.Array | None = None) -> set[bytes]:
    """The traces among ``rows`` (``trace_id``, ``span_id``, ``parent_span_id``: all of each
    trace's spans) with a span whose parent is not among its trace's spans.  ``numbers``: a
    number for each row's trace, the same for a trace's rows and different for another trace's
    (``complete`` has the trace's place among those asked); by default its place among the
    distinct trace ids of ``rows``.

    A span's key is its trace id and span id together: span ids are unique within a trace only
    (the bench's requests, copies of a few templates, reuse them across traces).  With 8-byte
    span ids (all the receiver accepts), a span is looked up by one number: its span id XOR its
    trace's number spread over 64 bits, the same for a parent in its own trace; the first span of
    that number is the parent if it is in the same trace, and no span of it means the parent is
    missing.  Only a parent whose number first belongs to another trace's span (by chance, or
    ids made so) is looked for by the whole key, as are ids of other lengths."""
    trace, span, parent = (_one_chunk(rows.column(c)) for c in ("trace_id", "span_id", "parent_span_id"))
    if numbers is None:
        numbers = pc.index_in(trace, value_set=pc.unique(trace))
    try:
        mix = pc.multiply(numbers.cast(pa.uint64()), _SPREAD)  # wraps: an odd factor, so one-to-one
        span_n = pc.bit_wise_xor(_as_numbers(span), mix)
        parent_n = pc.bit_wise_xor(_as_numbers(parent), mix)
    except pa.ArrowInvalid:  # an id of another length
        return _orphaned(trace, span, parent, pc.is_valid(parent))
    at = pc.index_in(parent_n, value_set=span_n)
    with_parent = pc.is_valid(parent)
    missing = pc.and_(with_parent, pc.is_null(at))  # no span has that number
    incomplete = set(pc.unique(trace.filter(missing)).to_pylist())
    elsewhere = pc.and_(with_parent, pc.invert(pc.equal(numbers.take(at), numbers)))  # null where missing
    if pc.any(elsewhere).as_py():
        holders = pc.is_in(span_n, value_set=parent_n.filter(elsewhere))  # every span such a parent may be
        incomplete |= _orphaned(trace, span, parent, pc.fill_null(elsewhere, False), holders)
    return incomplete


def _orphaned(trace: pa.Array, span: pa.Array, parent: pa.Array, asked: pa.Array,
              among: pa.Array | None = None) -> set[bytes]:
    """The traces of the rows ``asked`` whose parent is not a span of their trace (among the
    rows ``among``, by default all), keyed by trace id and span id together."""
    spans = pc.binary_join_element_wise(trace, span, NO_SEPARATOR)
    if among is not None:
        spans = spans.filter(among)
    parents = pc.binary_join_element_wise(trace.filter(asked), parent.filter(asked), NO_SEPARATOR)
    orphan = pc.and_(pc.is_valid(parents), pc.invert(pc.is_in(parents, value_set=spans)))
    return set(pc.unique(trace.filter(asked).filter(orphan)).to_pylist())


def _as_numbers(ids: pa.Array) -> pa.Array:
    """Eight-byte ids as unsigned 64-bit numbers (the same bytes: equal ids, equal numbers);
    ``ArrowInvalid`` if one is of another length."""
    fixed = ids.cast(pa.binary(8))
    return pa.Array.from_buffers(pa.uint64(), len(fixed), [fixed.buffers()[0], fixed.buffers()[1]],
                                 offset=fixed.offset)


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


class JournalError(RuntimeError):
    """The journal file cannot be opened (another process holds it, no permission, not a database)."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One appended batch: its columns but ``raw`` (``meta``), and its spans' bytes as one
    block (``packed``: concatenated, compressed when that pays) with their offsets in it."""

    meta: pa.RecordBatch
    offsets: pa.Buffer | None  # int32, rows + 1, the first 0; None: ``plain`` holds the bytes
    packed: pa.Buffer | None
    size: int                  # bytes of the concatenated spans
    compressed: bool
    nbytes: int                # bytes it holds: its buffers' sizes
    plain: pa.Array | None = None  # a raw column with nulls (never from decoding): kept as it is

    @classmethod
    def pack(cls, batch: pa.RecordBatch, codec: pa.Codec) -> _Chunk:
        meta = batch.remove_column(_RAW)
        raw = batch.column(_RAW)
        # The buffers' whole sizes, not ``nbytes`` (the ranges the rows use, ~24 B less a request's
        # chunk of the bench's): that sums each buffer once through a set, ~22 µs a 500-span batch.
        held = meta.get_total_buffer_size()
        if raw.null_count:
            return cls(meta, None, None, 0, False, held + raw.get_total_buffer_size(), raw)
        n, at = len(raw), raw.offset
        offsets = pa.Array.from_buffers(pa.int32(), n + 1, [None, raw.buffers()[1]], offset=at)
        first, last = offsets[0].as_py(), offsets[n].as_py()
        if first or at:  # a slice: its offsets from 0, in a buffer of their own
            offsets = pc.subtract(offsets, pa.scalar(first, pa.int32()))
        data = raw.buffers()[2].slice(first, last - first) if last > first else pa.py_buffer(b"")
        block = codec.compress(data, asbytes=False)
        compressed = block.size < data.size * 0.9
        # Copied to a block of its exact size: the builder's buffer and the codec's are larger.
        packed = pa.py_buffer((block if compressed else data).to_pybytes())
        return cls(meta, offsets.buffers()[1].slice(0, (n + 1) * 4), packed, data.size, compressed,
                   held + (n + 1) * 4 + packed.size)

    @property
    def rows(self) -> int:
        return self.meta.num_rows

    def raw(self, codec: pa.Codec) -> pa.Array:
        """Its spans' bytes (the ``raw`` column)."""
        if self.plain is not None:
            return self.plain
        assert self.packed is not None
        data = codec.decompress(self.packed, self.size, asbytes=False) if self.compressed else self.packed
        return pa.Array.from_buffers(pa.binary(), self.rows, [None, self.offsets, data])

    def unpack(self, codec: pa.Codec) -> pa.RecordBatch:
        """The batch as appended (``STORE_SCHEMA``)."""
        return pa.RecordBatch.from_arrays([*self.meta.columns, self.raw(codec)], schema=STORE_SCHEMA)


@dataclass(slots=True)
class _Generation:
    number: int  # its place in the order generations were started (compaction keeps it)
    chunks: list[_Chunk] = field(default_factory=list)
    rows: int = 0
    live: int = 0
    nbytes: int = 0
    alive: pa.ChunkedArray | None = None  # per-row "not yet released"; None while every row is

    def table(self) -> pa.Table:
        """Its rows' columns but ``raw`` (``META_SCHEMA``)."""
        return pa.Table.from_batches([c.meta for c in self.chunks], META_SCHEMA)


class SpanStore:
    """Buffered spans (in memory, plus a DuckDB journal file for durability)."""

    def __init__(self, path: str | None = None, memory_limit: str | None = None,
                 generation_rows: int = 20_000, threads: int = 1, forget_delay: float = FORGET_DELAY) -> None:
        self.schema = STORE_SCHEMA
        self._path = path
        self._memory_limit = memory_limit
        self._generation_rows = generation_rows
        self._threads = threads
        self._forget_delay = forget_delay
        self._codec = pa.Codec(RAW_CODEC)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: duckdb.DuckDBPyConnection | None = None
        # Delivered spans' keys waiting for the next delete, and the deletes under way (event loop only).
        self._delivered: list[pa.Table] = []
        self._forget_timer: asyncio.TimerHandle | None = None
        self._forgetting: set[asyncio.Task[None]] = set()
        self._gens: list[_Generation] = []
        self._started = 0  # generations started so far: the next one's number
        # Buffered trace id -> the number of the generation its first buffered span went to: its
        # spans are all in that generation or later ones, so finding them (``complete``, ``release``)
        # reads only those; the traces to check are mostly recent, the buffer under a backlog is not.
        self._first_gen: dict[bytes, int] = {}
        # Of the traces whose spans went to more than one generation (few: a trace's spans mostly
        # come in one request), the number of the last: the generations between hold the rest.
        self._last_gen: dict[bytes, int] = {}
        self._resources: dict[int, bytes] = {}
        self._scopes: dict[int, bytes] = {}
        self.buffered_spans = 0
        # Appends come from the receivers' decoding thread (one hop less per
        # request); releases and DuckDB work from the store thread.
        self._rows_lock = threading.Lock()  # generations, group heads, counters
        self._db_lock = threading.Lock()    # the DuckDB connection

    @property
    def durable(self) -> bool:
        return self._path is not None

    # --- lifecycle -----------------------------------------------------------

    async def open(self) -> dict[bytes, int]:
        """Open the journal; returns the span count per trace recovered from it.
        ``JournalError`` if it cannot be opened (another process holds it)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faulttrace-store")
        try:
            return await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        """Delete what was delivered from the journal, then close it."""
        if self._executor is None:
            return
        await self._forget_delivered()
        await asyncio.gather(*self._forgetting)
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:  # an API guard, so not an assert (python -O drops those)
            raise RuntimeError("the store is not open: await open() first")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> dict[bytes, int]:
        if not self.durable:
            return {}  # spans live in Arrow batches; DuckDB is only the journal (analysis has its own)
        conn = self._connect()
        self._conn = conn
        conn.execute(f"SET threads TO {int(self._threads)}")
        if self._memory_limit:
            conn.execute("SET memory_limit = ?", [self._memory_limit])
        conn.execute("CREATE TABLE IF NOT EXISTS resources (id BIGINT PRIMARY KEY, head BLOB NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS scopes (id BIGINT PRIMARY KEY, head BLOB NOT NULL)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS spans ({_COLUMNS_SQL})")
        return self._recover()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        assert self._path is not None
        path = Path(self._path)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return duckdb.connect(str(path))
        except (OSError, duckdb.Error) as err:
            # DuckDB: 'Could not set lock on file "…": Conflicting lock is held in <program> (PID n).'
            if isinstance(err, duckdb.IOException) and "Could not set lock" in str(err):
                holder = re.search(r"PID \d+", str(err))
                raise JournalError(
                    f"the journal {path} is in use by another process{f' ({holder[0]})' if holder else ''}: "
                    "two faulttrace processes cannot share one journal; give each its own "
                    f"{_PATH_KEY} (or ':memory:' to keep spans in memory only)") from None
            raise JournalError(f"cannot open the journal {path} ({_PATH_KEY}): {err}") from None

    def _recover(self) -> dict[bytes, int]:
        """Load what a previous process left buffered in the journal."""
        conn = self._conn
        assert conn is not None
        have = [r[0] for r in conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'spans' ORDER BY column_index").fetchall()]
        # A journal of an older version may have more columns (attributes were
        # once projected on arrival): its rows are read as the store keeps them now.
        table = conn.sql(f"SELECT {', '.join(self.schema.names)} FROM spans").to_arrow_table().cast(self.schema)
        self._resources = dict(conn.execute("SELECT id, head FROM resources").fetchall())
        self._scopes = dict(conn.execute("SELECT id, head FROM scopes").fetchall())
        if have != self.schema.names:
            conn.execute("DROP TABLE spans")
            conn.execute(f"CREATE TABLE spans ({_COLUMNS_SQL})")
            self._journal(table)
        if table.num_rows == 0:
            return {}
        counts = pc.value_counts(table.column("trace_id")).to_pylist()
        traces = {c["values"]: c["counts"] for c in counts}
        self._keep([_Chunk.pack(b, self._codec) for b in table.to_batches()], traces)
        log.info("recovered %d buffered spans of %d traces from %s", table.num_rows, len(traces), self._path)
        return traces

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- writes --------------------------------------------------------------

    async def append(self, batch: SpanBatch) -> None:
        """Keep a decoded batch; returns once the spans are stored (and journaled, if durable)."""
        if batch.span_count:
            await self._run(self.append_now, batch)

    def append_now(self, batch: SpanBatch) -> None:
        """``append`` for a worker thread that already holds the batch (thread-safe)."""
        if not batch.span_count:
            return
        if self.durable:
            with self._db_lock:
                self._append_durable(batch)
        chunks = [_Chunk.pack(b, self._codec) for b in batch.table.to_batches()]  # outside the lock
        with self._rows_lock:
            self._resources.update(batch.resources)
            self._scopes.update(batch.scopes)
            self._keep(chunks, batch.traces)

    def _keep(self, chunks: list[_Chunk], traces: Iterable[bytes]) -> None:
        """Append ``chunks`` (the spans of ``traces``) to the newest generation."""
        rows = sum(c.rows for c in chunks)
        if not self._gens or self._gens[-1].rows >= self._generation_rows:
            self._gens.append(_Generation(self._started))
            self._started += 1
        gen = self._gens[-1]
        number, first, last = gen.number, self._first_gen, self._last_gen
        for trace_id in traces:
            if first.setdefault(trace_id, number) != number:
                last[trace_id] = number
        if gen.alive is not None:
            gen.alive = pa.chunked_array([*gen.alive.chunks, pa.array([True] * rows)], pa.bool_())
        gen.chunks.extend(chunks)
        gen.nbytes += sum(c.nbytes for c in chunks)
        gen.rows += rows
        gen.live += rows
        self.buffered_spans += rows

    def _append_durable(self, batch: SpanBatch) -> None:
        conn = self._conn
        assert conn is not None
        for table, groups in (("resources", batch.resources), ("scopes", batch.scopes)):
            new = pa.table({"id": pa.array(list(groups), pa.int64()),
                            "head": pa.array(list(groups.values()), pa.binary())})
            conn.register("new_groups", new)
            try:
                conn.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM new_groups")
            finally:
                conn.unregister("new_groups")
        self._journal(batch.table)

    def _journal(self, table: pa.Table) -> None:
        assert self._conn is not None
        self._conn.register("incoming", table)
        try:
            self._conn.execute("INSERT INTO spans SELECT * FROM incoming")
        finally:
            self._conn.unregister("incoming")

    # --- release -------------------------------------------------------------

    async def release(self, trace_ids: Iterable[bytes]) -> ReleasedSpans:
        """Remove the traces' spans from the store and hand them back.  A durable
        store keeps them in its journal until they are ``forget``-ten (delivered)."""
        return await self._run(self._release, list(trace_ids))

    def _release(self, trace_ids: list[bytes]) -> ReleasedSpans:
        with self._rows_lock:
            released = self._take(trace_ids)
            spans = self._released_spans(released, len(trace_ids))
            self._collect_generations()
        return spans

    async def complete(self, trace_ids: Iterable[bytes]) -> list[bytes]:
        """Those of ``trace_ids`` whose buffered spans all have their parent among them
        (a trace whose root has arrived and nothing known missing: the assembler's candidates)."""
        ids = list(trace_ids)
        if not ids:
            return []
        return await self._run(self._complete, ids)

    def _complete(self, trace_ids: list[bytes]) -> list[bytes]:
        with self._rows_lock:
            # A trace in the index has spans buffered (its entry leaves with them, ``_take``).
            first = self._first_gen
            buffered = [t for t in trace_ids if t in first]
            if not buffered:
                return []
            rows, places = self._live_rows(buffered, ("trace_id", "span_id", "parent_span_id"))
        incomplete = incomplete_traces(rows, places)
        return [t for t in buffered if t not in incomplete] if incomplete else buffered

    def _live_rows(self, trace_ids: list[bytes], columns: tuple[str, ...]) -> tuple[pa.Table, pa.Array]:
        """``columns`` of the buffered rows of ``trace_ids``, as one chunk each, and the place
        of each row's trace in ``trace_ids`` (its first)."""
        gens = [gen for gen in self._holding(trace_ids) if gen.live]
        table = pa.Table.from_batches([c.meta for gen in gens for c in gen.chunks], META_SCHEMA).select(columns)
        # One lookup over every generation holding them: each builds its set of the ids anew.
        places = pc.index_in(table.column("trace_id"), value_set=pa.array(trace_ids, pa.binary()))
        hit = pc.is_valid(places)
        if any(gen.alive is not None for gen in gens):
            alive = [part for gen in gens
                     for part in (gen.alive.chunks if gen.alive is not None else [pa.repeat(True, gen.rows)])]
            hit = pc.and_(hit, pa.chunked_array(alive, pa.bool_()))
        # Filtered as one chunk: chunk by chunk (a request's spans each) took twice as long.
        mask = hit.combine_chunks()
        return table.combine_chunks().filter(mask), places.combine_chunks().filter(mask)

    def forget(self, keys: pa.Table) -> None:
        """Drop released spans (``KEY_COLUMNS`` of each) from the journal: they are
        delivered (or given up on for good), so a restart must not send them again.
        They are deleted within ``forget_delay``, together with whatever else was
        delivered meanwhile, and at the latest by ``close``.  Call on the event loop."""
        if not self.durable or self._executor is None or keys.num_rows == 0:
            return  # closed: what is still journaled is sent again on the next start
        self._delivered.append(keys.select(KEY_COLUMNS))
        if self._forget_timer is None:
            self._forget_timer = asyncio.get_running_loop().call_later(self._forget_delay, self._forget_soon)

    def _forget_soon(self) -> None:
        task = asyncio.ensure_future(self._forget_delivered())
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def _forget_delivered(self) -> None:
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None
        if not self._delivered:
            return
        keys = pa.concat_tables(self._delivered)
        self._delivered = []
        try:
            await self._run(self._forget, keys)
        except Exception:  # component boundary: the spans stay journaled, a restart sends them again
            log.exception("deleting %d delivered spans from the journal failed", keys.num_rows)

    def _take(self, trace_ids: list[bytes]) -> pa.Table:
        """Select (and mark released) the rows of ``trace_ids`` in the generations holding them."""
        parts: list[tuple[_Chunk, pa.Array | None]] = []  # the chunks holding released rows, and which (None: all)
        gens = [gen for gen in self._holding(trace_ids, forget=True) if gen.live] if trace_ids else []
        if gens:
            # One lookup over every generation holding them: each builds its set of the ids anew.
            column = pa.chunked_array([c.meta.column(_TRACE_ID) for gen in gens for c in gen.chunks], pa.binary())
            hits = pc.is_in(column, value_set=pa.array(trace_ids, pa.binary())).combine_chunks()
            start = 0
            for gen in gens:
                hit, start = hits.slice(start, gen.rows), start + gen.rows
                alive = gen.alive.combine_chunks() if gen.alive is not None else None
                if alive is not None:
                    hit = pc.and_(hit, alive)  # a late span's trace: not its already released rows
                count = pc.sum(hit).as_py() or 0
                if count == 0:
                    continue
                if count == gen.rows:
                    # The whole generation is due (the common case: traces complete
                    # in arrival order): hand all its batches over, unfiltered.
                    parts.extend((chunk, None) for chunk in gen.chunks)
                    gen.chunks, gen.rows, gen.live, gen.nbytes, gen.alive = [], 0, 0, 0, None
                    continue
                parts.extend(self._hits(gen, hit))
                gen.live -= count
                gen.alive = pa.chunked_array([pc.and_not(alive, hit) if alive is not None else pc.invert(hit)])
        if not parts:
            return self.schema.empty_table()
        metas = pa.Table.from_batches([c.meta if rows is None else c.meta.filter(rows) for c, rows in parts], META_SCHEMA)
        self.buffered_spans -= metas.num_rows
        return metas.add_column(_RAW, STORE_SCHEMA.field(_RAW), self._joined_raw(parts))

    def _holding(self, trace_ids: list[bytes], forget: bool = False) -> list[_Generation]:
        """The generations holding spans of ``trace_ids``: each trace's first, and for one
        whose spans went to several, those from its first to its last.  Not all from the
        earliest on: the newest generations, full of traces not yet due, are mostly not read.
        ``forget``: the traces leave the index (their spans are being taken)."""
        first, last = self._first_gen, self._last_gen
        spread = [range(first[t], (last.pop(t) if forget else last[t]) + 1) for t in trace_ids if t in last] \
            if last else []
        # map: a loop in C, over every trace of a release.
        numbers = set(map(first.pop if forget else first.get, trace_ids, repeat(None)))
        for generations in spread:
            numbers.update(generations)
        return [gen for gen in self._gens if gen.number in numbers]

    def _joined_raw(self, parts: list[tuple[_Chunk, pa.Array | None]]) -> pa.Array | pa.ChunkedArray:
        """The released rows' bytes as one array, unpacked chunk by chunk into it.  One array:
        payloads take their rows from it (``otlp.payload``), and a take from a chunked array
        concatenates every chunk first (30x slower for 6,000 rows of 50,000); built in place, not
        by concatenating the unpacked chunks, which held the release's bytes twice (another
        ~510 B a released span of the bench's, at the peak of each release)."""
        # Rows of partly released chunks first: the size of what is kept of them is known once filtered.
        picked = {i: c.raw(self._codec).filter(rows) for i, (c, rows) in enumerate(parts) if rows is not None}
        sizes = [c.size if i not in picked else _data_size(picked[i]) for i, (c, _) in enumerate(parts)]
        total = sum(sizes)
        if total >= _MAX_COMBINED or any(c.plain is not None for c, _ in parts):  # offsets are int32; nulls
            return pa.chunked_array([picked[i] if i in picked else c.raw(self._codec)
                                     for i, (c, _) in enumerate(parts)], pa.binary())
        data = pa.allocate_buffer(total)
        out = memoryview(data).cast("B")
        offsets: list[pa.Array] = []
        at = 0
        for i, ((chunk, _), size) in enumerate(zip(parts, sizes)):
            raw = picked.pop(i) if i in picked else chunk.raw(self._codec)  # one chunk unpacked at a time
            first = _offsets(raw)
            start = first[0].as_py()
            out[at:at + size] = memoryview(raw.buffers()[2]).cast("B")[start:start + size]
            # A typed scalar: a Python int would be converted anew each call (~60 µs: pyarrow tries
            # to import dateutil), once per chunk of a release.
            offsets.append(pc.add(first.slice(0, len(raw)), pa.scalar(at - start, pa.int32())))
            at += size
        offsets.append(pa.array([total], pa.int32()))
        rows = sum(len(o) for o in offsets) - 1
        return pa.Array.from_buffers(pa.binary(), rows, [None, pa.concat_arrays(offsets).buffers()[1], data])

    @staticmethod
    def _hits(gen: _Generation, hit: pa.Array | pa.ChunkedArray) -> Iterator[tuple[_Chunk, pa.Array]]:
        """The chunks of ``gen`` holding rows where ``hit``, each with its part of ``hit``."""
        mask = hit.combine_chunks() if isinstance(hit, pa.ChunkedArray) else hit
        start = 0
        for chunk in gen.chunks:
            part = mask.slice(start, chunk.rows)
            start += chunk.rows
            if pc.any(part).as_py():
                yield chunk, part

    def _unpack_hits(self, gen: _Generation, hit: pa.ChunkedArray) -> pa.Table:
        """The rows of ``gen`` where ``hit``, unpacking only the batches holding any."""
        return pa.Table.from_batches([chunk.unpack(self._codec).filter(part) for chunk, part in self._hits(gen, hit)],
                                     STORE_SCHEMA)

    def _forget(self, keys: pa.Table) -> None:
        conn = self._conn
        assert conn is not None
        with self._db_lock:
            conn.register("delivered", keys)
            try:
                conn.execute("DELETE FROM spans WHERE (trace_id, span_id) IN (SELECT (trace_id, span_id) FROM delivered)")
            finally:
                conn.unregister("delivered")

    def _released_spans(self, released: pa.Table, trace_count: int) -> ReleasedSpans:
        # The rows stay Arrow columns (model.ReleasedSpans); only the heads they refer to are looked up.
        resource_ids = pc.unique(released.column("resource_id")).to_pylist()
        scope_ids = pc.unique(released.column("scope_id")).to_pylist()
        return ReleasedSpans(table=released,
                             resources={r: self._resources[r] for r in resource_ids},
                             scopes={s: self._scopes[s] for s in scope_ids},
                             trace_count=trace_count)

    def _collect_generations(self) -> None:
        """Drop emptied generations; compact old ones that only stragglers keep alive."""
        newest = self._gens[-1] if self._gens else None
        kept = []
        for gen in self._gens:
            if gen.live == 0:
                # Its batches are freed with it; the newest too (the next append starts another):
                # emptied in parts, it would otherwise pin up to generation_rows released spans
                # (~12 MiB of a burst's last rows, measured with tests.e2e.bench_memory).
                continue
            if gen is not newest and gen.alive is not None and gen.live * 4 < gen.rows:
                table = self._unpack_hits(gen, gen.alive).combine_chunks()
                gen.chunks = [_Chunk.pack(b, self._codec) for b in table.to_batches()]
                gen.rows, gen.alive = gen.live, None
                gen.nbytes = sum(c.nbytes for c in gen.chunks)
            kept.append(gen)
        self._gens = kept
        if self.buffered_spans == 0:
            # Nothing buffered: no head is referenced any more.
            self._resources.clear()
            self._scopes.clear()

    async def forget_unused_groups(self) -> None:
        """Drop resource/scope heads no buffered span refers to (call now and then)."""
        await self._run(self._forget_unused_groups)

    def _forget_unused_groups(self) -> None:
        with self._rows_lock:
            self._forget_unused_groups_locked()

    def _forget_unused_groups_locked(self) -> None:
        tables = [g.table() for g in self._gens]
        for heads, col in ((self._resources, "resource_id"), (self._scopes, "scope_id")):
            used: set[int] = set()
            for t in tables:
                used.update(pc.unique(t.column(col)).to_pylist())
            for gid in set(heads) - used:
                del heads[gid]

    async def release_unused(self) -> None:
        """Hand the Arrow memory pool's freed pages back to the system, on the store thread (whose
        heap holds what releases unpacked) and the caller's (which framed them).  Call after a
        release's spans are dropped: pyarrow's allocator (mimalloc) otherwise keeps them, 40-50 MiB
        under the bench's pipeline load, about what 100k buffered spans take (docs/sizing.md);
        about 1 ms a call."""
        pool = pa.default_memory_pool()
        await self._run(pool.release_unused)
        pool.release_unused()

    # --- introspection -------------------------------------------------------

    def memory_bytes(self) -> int:
        """Bytes held by buffered spans (Arrow buffers, packed bytes) and group heads."""
        with self._rows_lock:
            return self._memory_bytes()

    def _memory_bytes(self) -> int:
        spans = sum(g.nbytes for g in self._gens)
        heads = sum(len(h) for h in self._resources.values()) + sum(len(h) for h in self._scopes.values())
        return spans + heads

    async def run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn(conn)`` against the journal on the store thread (a durable store)."""
        return await self._run(self._with_conn, fn)

    def _with_conn(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        if self._conn is None:  # an API guard (run() on a store in memory), not an assert
            raise RuntimeError("the store has no journal: run() needs a durable store (storage.path)")
        with self._db_lock:
            return fn(self._conn)
