"""processor.store.SpanStore: append/release, generations, group heads, file storage."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from processor.model import SpanBatch
from processor.receivers.decode import decode
from processor.store import KEY_COLUMNS, STORE_SCHEMA, JournalError, SpanStore, incomplete_traces
from tests.support.harness import kv, sid, tid


def batch(traces: range, spans_per_trace: int = 1, service: str = "svc", scope: str = "lib") -> SpanBatch:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    for t in traces:
        for s in range(spans_per_trace):
            span = ss.spans.add(trace_id=tid(t), span_id=sid(t * 100 + s + 1), name=f"{service}/{scope}/{t}/{s}")
            span.attributes.append(kv("http.method", "GET" if s else "POST"))
    decoded = decode(req)
    assert decoded.rejected_spans == 0
    return decoded.batch


def run(test: Callable[[SpanStore], Awaitable[Any]], **store_args: Any) -> Any:
    async def main() -> Any:
        store = SpanStore(**store_args)
        await store.open()
        try:
            return await test(store)
        finally:
            await store.close()

    return asyncio.run(main())


async def count(store: SpanStore, table: str) -> int:
    return await store.run(lambda c: c.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def test_append_then_release_returns_the_spans_with_their_heads():
    async def test(store: SpanStore) -> None:
        await store.append(batch(range(1, 4), spans_per_trace=2))
        assert store.buffered_spans == 6
        spans = await store.release([tid(1), tid(3)])
        assert spans.span_count == 4 and spans.trace_count == 2
        assert sorted(spans.span_ids) == [sid(101), sid(102), sid(301), sid(302)]
        assert {Span.FromString(r).name for r in spans.raw} == {"svc/lib/1/0", "svc/lib/1/1", "svc/lib/3/0",
                                                               "svc/lib/3/1"}
        assert set(spans.resource_ids) == set(spans.resources) and set(spans.scope_ids) == set(spans.scopes)
        assert ResourceSpans.FromString(spans.resources[spans.resource_ids[0]]).resource.attributes[0] \
            == kv("service.name", "svc")
        assert ScopeSpans.FromString(spans.scopes[spans.scope_ids[0]]).scope.name == "lib"
        assert store.buffered_spans == 2
        again = await store.release([tid(1)])  # already released: nothing
        assert again.span_count == 0
        rest = await store.release([tid(2), tid(99)])
        assert [Span.FromString(r).name for r in rest.raw] == ["svc/lib/2/0", "svc/lib/2/1"]
        assert store.buffered_spans == 0

    run(test)


def test_released_spans_come_with_their_rows_as_stored_for_analysis():
    async def test(store: SpanStore) -> None:
        await store.append(batch(range(1, 3), spans_per_trace=2))
        spans = await store.release([tid(2)])
        table = spans.table
        assert table.schema == STORE_SCHEMA  # span bytes included: analysis projects from them
        assert table.column("raw").to_pylist() == spans.raw
        assert sorted(table.column("name").to_pylist()) == ["svc/lib/2/0", "svc/lib/2/1"]
        assert set(spans.resources) == set(table.column("resource_id").to_pylist())
        nothing = await store.release([tid(7)])
        assert nothing.table.num_rows == 0 and nothing.table.schema == STORE_SCHEMA

    run(test)


def test_heads_of_spans_still_buffered_survive_other_releases():
    """Regression: releasing one trace used to delete every scope head (and forget the known
    groups), so a later release of another trace had no scope to export its spans under."""
    async def test(store: SpanStore) -> None:
        await store.append(batch(range(1, 2), scope="first"))
        await store.append(batch(range(2, 3), scope="second", service="other"))
        await store.release([tid(1)])
        spans = await store.release([tid(2)])
        assert ScopeSpans.FromString(spans.scopes[spans.scope_ids[0]]).scope.name == "second"
        assert ResourceSpans.FromString(spans.resources[spans.resource_ids[0]]).resource.attributes[0] \
            == kv("service.name", "other")

    run(test)


def test_resource_and_scope_heads_are_kept_once(tmp_path):
    path = str(tmp_path / "heads.duckdb")

    async def test(store: SpanStore) -> None:
        for first in (1, 10, 20):
            await store.append(batch(range(first, first + 3)))
        await store.append(batch(range(30, 31), scope="other-scope"))
        spans = await store.release([tid(t) for t in (1, 10, 20, 30)])
        assert spans.span_count == 4
        assert len(spans.resources) == 1 and len(spans.scopes) == 2
        assert len(set(spans.resource_ids)) == 1
        # The journal stores each head once too.
        assert await count(store, "resources") == 1
        assert await count(store, "scopes") == 2

    run(test, path=path)


def test_unreferenced_heads_are_forgotten_and_referenced_ones_kept():
    big = "x" * 50_000  # a resource head large enough to see in memory_bytes

    async def test(store: SpanStore) -> None:
        await store.append(batch(range(1, 2), service=big, scope="x"))
        await store.append(batch(range(2, 3), service="b", scope="y"))
        await store.release([tid(1)])
        released = store.memory_bytes()
        await store.forget_unused_groups()
        assert store.memory_bytes() <= released - 50_000  # the big resource head is gone
        spans = await store.release([tid(2)])  # its heads survived the clean-up
        assert ScopeSpans.FromString(spans.scopes[spans.scope_ids[0]]).scope.name == "y"
        # Everything released: a new batch brings its own heads back.
        await store.append(batch(range(3, 4), service=big, scope="x"))
        spans = await store.release([tid(3)])
        assert ResourceSpans.FromString(spans.resources[spans.resource_ids[0]]).resource.attributes[0] \
            == kv("service.name", big)

    run(test, generation_rows=1)  # one generation per batch: released ones are dropped whole


def test_an_emptied_generation_frees_its_memory():
    async def test(store: SpanStore) -> None:
        for first in (1, 11, 21):  # 10 spans each = one full generation each
            await store.append(batch(range(first, first + 10)))
        full = store.memory_bytes()
        await store.release([tid(t) for t in range(1, 11)])  # the oldest generation, whole
        after = store.memory_bytes()
        assert after <= full * 0.75
        await store.release([tid(t) for t in range(11, 21)])
        assert store.memory_bytes() <= after * 0.6
        assert store.buffered_spans == 10
        spans = await store.release([tid(t) for t in range(21, 31)])
        assert spans.span_count == 10 and store.buffered_spans == 0

    run(test, generation_rows=10)


def test_stragglers_do_not_pin_an_old_generation():
    async def test(store: SpanStore) -> None:
        await store.append(batch(range(1, 101)))    # old generation: 100 rows
        await store.append(batch(range(101, 102)))  # newest
        full = store.memory_bytes()
        await store.release([tid(t) for t in range(1, 99)])  # 2 long-lived traces stay behind
        assert store.buffered_spans == 3
        assert store.memory_bytes() < full * 0.2  # compacted to the stragglers
        spans = await store.release([tid(99), tid(100), tid(101)])
        assert sorted(Span.FromString(r).name for r in spans.raw) == [
            "svc/lib/100/0", "svc/lib/101/0", "svc/lib/99/0"]
        assert len(spans.scopes) == 1 and len(spans.resources) == 1

    run(test, generation_rows=100)


def test_spans_of_a_trace_spread_over_generations_are_released_together():
    async def test(store: SpanStore) -> None:
        for _ in range(3):
            await store.append(batch(range(1, 4)))  # the same traces again (ids repeat: fine)
        spans = await store.release([tid(2)])
        assert spans.span_count == 3 and set(spans.trace_ids) == {tid(2)}
        late = await store.release([tid(2)])
        assert late.span_count == 0  # released rows are not handed out twice
        await store.append(batch(range(2, 3)))  # a late span of the released trace
        late = await store.release([tid(2)])
        assert late.span_count == 1

    run(test, generation_rows=3)


def keys(spans) -> pa.Table:
    return spans.table.select(KEY_COLUMNS)


def released_names(spans) -> list[str]:
    return sorted(Span.FromString(r).name for r in spans.raw)


def test_file_storage_survives_close_and_reopen(tmp_path):
    path = str(tmp_path / "spans.duckdb")

    async def first() -> None:
        store = SpanStore(path=path, generation_rows=4)
        assert await store.open() == {}
        await store.append(batch(range(1, 3), spans_per_trace=2))
        await store.append(batch(range(3, 4), spans_per_trace=2, scope="second"))
        delivered = await store.release([tid(2)])
        store.forget(keys(delivered))
        await store.release([tid(3)])  # released but never delivered: the journal keeps it
        await store.close()

    async def second() -> None:
        store = SpanStore(path=path, generation_rows=4)
        recovered = await store.open()
        assert recovered == {tid(1): 2, tid(3): 2}
        assert store.buffered_spans == 4
        spans = await store.release([tid(1), tid(3)])
        assert released_names(spans) == ["svc/lib/1/0", "svc/lib/1/1", "svc/second/3/0", "svc/second/3/1"]
        assert {ScopeSpans.FromString(spans.scopes[s]).scope.name for s in spans.scope_ids} == {"lib", "second"}
        store.forget(keys(spans))
        await store.append(batch(range(5, 6)))
        await store.close()

    async def third() -> None:
        store = SpanStore(path=path, generation_rows=4)
        assert await store.open() == {tid(5): 1}
        spans = await store.release([tid(5)])
        assert released_names(spans) == ["svc/lib/5/0"]
        assert ResourceSpans.FromString(spans.resources[spans.resource_ids[0]]).resource.attributes[0] \
            == kv("service.name", "svc")
        store.forget(keys(spans))
        await store.close()

    async def fourth() -> None:
        store = SpanStore(path=path)
        assert await store.open() == {}  # nothing left buffered or undelivered
        store.forget(pa.table({"trace_id": [tid(9)], "span_id": [sid(901)]}))  # not journaled: a no-op
        await store.close()

    asyncio.run(first())
    asyncio.run(second())
    asyncio.run(third())
    asyncio.run(fourth())


def test_delivered_spans_leave_the_journal_soon_gathered_into_one_delete(tmp_path):
    async def test(store: SpanStore) -> None:
        await store.append(batch(range(1, 5), spans_per_trace=2))
        spans = await store.release([tid(1), tid(2), tid(3)])
        deletes = 0
        forget = store._forget

        def counted(keys: pa.Table) -> None:
            nonlocal deletes
            deletes += 1
            forget(keys)

        store._forget = counted
        store.forget(keys(spans).slice(0, 2))  # one payload settled
        store.forget(keys(spans).slice(2, 4))  # another, soon after
        assert await count(store, "spans") == 8  # gathered, not deleted yet
        await asyncio.sleep(0.3)  # forget_delay 0.05 s: no release tick, no close needed
        assert await count(store, "spans") == 2 and deletes == 1
        store.forget(keys(spans).slice(0, 2))  # forgetting again is harmless
        await asyncio.sleep(0.3)
        assert await count(store, "spans") == 2 and deletes == 2

    run(test, path=str(tmp_path / "spans.duckdb"), forget_delay=0.05)


def test_close_deletes_what_was_delivered_before_closing(tmp_path):
    path = str(tmp_path / "spans.duckdb")

    async def test(store: SpanStore) -> None:
        await store.append(batch(range(1, 4)))
        store.forget(keys(await store.release([tid(1), tid(2)])))
        assert await count(store, "spans") == 3  # still gathered when the store closes

    run(test, path=path, forget_delay=60)
    with duckdb.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone() == (1,)


def test_the_journals_directory_is_made(tmp_path):
    path = tmp_path / "state" / "faulttrace" / "journal.duckdb"
    run(lambda store: store.append(batch(range(1, 2))), path=str(path))
    assert path.is_file()


def test_a_journal_another_process_holds_is_one_clear_error(tmp_path):
    path = tmp_path / "journal.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); "
                               "print('open', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(JournalError) as err:
            run(lambda store: asyncio.sleep(0), path=str(path))
    finally:
        holder.communicate("", timeout=30)
    message = str(err.value)
    assert f"the journal {path} is in use by another process (PID {holder.pid})" in message
    assert "processors.faulttrace.storage.path" in message


def test_a_journal_with_the_attribute_columns_of_an_older_version_is_recovered(tmp_path):
    path = str(tmp_path / "spans.duckdb")

    async def write() -> None:
        store = SpanStore(path=path)
        await store.open()
        await store.append(batch(range(1, 3), spans_per_trace=2))
        await store.close()

    async def recover() -> None:
        store = SpanStore(path=path)
        assert await store.open() == {tid(1): 2, tid(2): 2}
        spans = await store.release([tid(1), tid(2)])
        assert released_names(spans) == ["svc/lib/1/0", "svc/lib/1/1", "svc/lib/2/0", "svc/lib/2/1"]
        store.forget(keys(spans))
        await store.close()

    asyncio.run(write())
    with duckdb.connect(path) as conn:  # older versions kept projected attributes as columns
        conn.execute("ALTER TABLE spans ADD COLUMN a_s_http_method_0123456789 VARCHAR DEFAULT 'GET'")
    asyncio.run(recover())
    with duckdb.connect(path) as conn:
        columns = [r[0] for r in conn.execute("SELECT column_name FROM duckdb_columns() "
                                              "WHERE table_name = 'spans' ORDER BY column_index").fetchall()]
    assert columns == STORE_SCHEMA.names  # the journal is rewritten in the current layout


def test_memory_bytes_grows_with_buffered_spans():
    async def test(store: SpanStore) -> tuple[int, int]:
        empty = store.memory_bytes()
        await store.append(batch(range(1, 50)))
        return empty, store.memory_bytes()

    empty, full = run(test)
    assert full > empty + 49 * 20


def test_an_unopened_store_refuses_work():
    store = SpanStore()
    with pytest.raises(RuntimeError, match="not open"):
        asyncio.run(store.append(batch(range(1, 2))))


def test_a_wholly_released_generation_is_handed_over_and_never_released_twice():
    async def test(store: SpanStore) -> None:
        await store.append(batch(range(1, 3), spans_per_trace=2))
        whole = await store.release([tid(1), tid(2)])  # every row of the generation: no copy
        assert sorted(whole.span_ids) == [sid(101), sid(102), sid(201), sid(202)]
        assert store.buffered_spans == 0 and store.memory_bytes() == 0
        await store.append(batch(range(3, 4)))       # lands in the same (newest) generation
        late = await store.release([tid(1), tid(3)])
        assert late.span_ids == [sid(301)]           # trace 1's rows are not handed out again
        assert store.buffered_spans == 0

    run(test, generation_rows=1000)


def test_the_newest_generation_emptied_in_parts_frees_its_memory():
    async def test(store: SpanStore) -> None:
        await store.append(batch(range(1, 11)))
        await store.release([tid(t) for t in range(1, 6)])  # part of the only (newest) generation
        assert store.memory_bytes() > 0
        await store.release([tid(t) for t in range(6, 11)])
        assert store.buffered_spans == 0 and store.memory_bytes() == 0
        await store.append(batch(range(11, 13)))  # a new generation takes the next spans
        spans = await store.release([tid(t) for t in range(1, 13)])
        assert sorted(spans.trace_ids) == [tid(11), tid(12)]

    run(test, generation_rows=1000)


def tree(n: int, parents: list[int | None], first: int = 1) -> SpanBatch:
    """Trace ``n``'s spans ``first``, ``first + 1``, ... whose parents are ``parents`` (None: a root)."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i, parent in enumerate(parents, first):
        span = ss.spans.add(trace_id=tid(n), span_id=sid(i), name=f"s{i}",
                            start_time_unix_nano=1, end_time_unix_nano=2)
        if parent is not None:
            span.parent_span_id = sid(parent)
    return decode(req).batch


def test_complete_finds_the_traces_whose_every_span_has_its_parent():
    async def test(store: SpanStore) -> list[bytes]:
        await store.append(tree(1, [2, None]))        # child before its root: whole
        await store.append(tree(2, [None, 1, 7]))     # span 3's parent (7) never came
        await store.append(tree(3, [None]))
        await store.append(tree(4, [5, None]))        # span 1's parent is 5, not the root (2): missing
        await store.release([tid(3)])            # released: no longer buffered, not whole here
        return await store.complete([tid(n) for n in (1, 2, 3, 4, 9)])

    assert run(test) == [tid(1)]


def test_complete_and_release_find_a_trace_whose_spans_are_generations_apart():
    """The store looks for a trace's spans from the generation its first span went to: spans that
    came generations later, an old generation compacted in between, a late span after the
    release, each is found."""
    async def test(store: SpanStore) -> None:
        await store.append(tree(1, [None]))               # trace 1's root: generation 0
        await store.append(tree(2, [3], first=1))         # trace 2's child, parent not yet here
        await store.append(batch(range(10, 20)))          # generation 0 is full
        await store.append(batch(range(20, 30)))          # generation 1, full too
        await store.release([tid(t) for t in range(10, 20)])   # generation 0 compacted to traces 1, 2
        await store.append(tree(1, [1], first=2))         # trace 1's child: generation 2
        assert await store.complete([tid(1)]) == [tid(1)]
        assert await store.complete([tid(2)]) == []
        await store.append(tree(2, [None], first=3))      # trace 2's root arrives: whole now
        assert await store.complete([tid(2)]) == [tid(2)]
        spans = await store.release([tid(1)])
        assert sorted(spans.span_ids) == [sid(1), sid(2)]
        await store.append(tree(1, [2], first=4))         # a late span: its parent left with the release
        assert await store.complete([tid(1)]) == []
        spans = await store.release([tid(t) for t in (1, 2, *range(20, 30))])
        assert sorted(spans.span_ids) == sorted([sid(1), sid(3), sid(4), *(sid(t * 100 + 1) for t in range(20, 30))])
        assert store.buffered_spans == 0

    run(test, generation_rows=10)


@pytest.mark.parametrize("seed", range(6))
def test_complete_agrees_with_a_check_span_by_span(seed: int) -> None:
    """Random traces, span ids unique (compared as numbers) or reused across traces (checked
    exactly), parents present, missing or in another trace only."""
    rng = random.Random(seed)
    shared = [rng.randbytes(8) for _ in range(6)]
    traces: dict[bytes, list[tuple[bytes, bytes | None]]] = {}
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for t in range(40):
        trace_id = rng.randbytes(16)
        ids = rng.sample(shared, 3) if seed % 2 and t % 3 == 0 else [rng.randbytes(8) for _ in range(3)]
        spans = [(ids[0], None), (ids[1], ids[0]), (ids[2], rng.choice([ids[1], ids[0], rng.choice(shared)]))]
        traces[trace_id] = spans
        for span_id, parent in spans:
            ss.spans.add(trace_id=trace_id, span_id=span_id, parent_span_id=parent or b"", name="s",
                         start_time_unix_nano=1, end_time_unix_nano=2)
    whole = [t for t, spans in traces.items()
             if all(p is None or p in {s for s, _ in spans} for _, p in spans)]
    assert 0 < len(whole) < len(traces)

    async def test(store: SpanStore) -> list[bytes]:
        await store.append(decode(req).batch)
        return await store.complete(list(traces))

    assert run(test) == whole


@pytest.mark.parametrize("seed", range(4))
def test_incomplete_traces_agree_with_a_check_span_by_span_whatever_the_ids_length(seed: int) -> None:
    """Eight-byte span ids (looked up as numbers, those reused across traces by the whole key)
    and the same ids a byte longer (all by the whole key) give the traces a plain check finds."""
    rng = random.Random(seed)
    shared = [rng.randbytes(8) for _ in range(5)]
    rows: list[tuple[bytes, bytes, bytes | None]] = []
    for _ in range(60):
        trace_id = rng.randbytes(16)
        ids = rng.sample(shared, 3) if rng.random() < 0.4 else [rng.randbytes(8) for _ in range(3)]
        parents = [None, ids[0], rng.choice([ids[1], rng.choice(shared), rng.randbytes(8)])]
        rows += [(trace_id, span_id, parent) for span_id, parent in zip(ids, parents)]
    rng.shuffle(rows)
    spans = {(t, s) for t, s, _ in rows}
    expected = {t for t, _, p in rows if p is not None and (t, p) not in spans}
    assert 0 < len(expected) < 60

    def table(longer: bytes) -> pa.Table:
        return pa.table({"trace_id": pa.array([t for t, _, _ in rows], pa.binary()),
                         "span_id": pa.array([s + longer for _, s, _ in rows], pa.binary()),
                         "parent_span_id": pa.array([None if p is None else p + longer for _, _, p in rows],
                                                    pa.binary())})

    assert incomplete_traces(table(b"")) == expected
    assert incomplete_traces(table(b"+")) == expected
    assert incomplete_traces(table(b"").slice(0, 0)) == set()


def test_incomplete_traces_tells_apart_traces_whose_spans_have_the_same_number():
    """Two traces with the same span ids (their ids each other's halves swapped): a span's
    parent is looked for in its own trace only."""
    a, b = bytes(range(8)), bytes(range(8, 16))
    whole, broken = a + b, b + a
    rows = pa.table({"trace_id": pa.array([broken, broken, whole, whole], pa.binary()),
                     "span_id": pa.array([sid(2), sid(3), sid(1), sid(2)], pa.binary()),
                     "parent_span_id": pa.array([sid(1), None, None, sid(1)], pa.binary())})
    assert incomplete_traces(rows) == {broken}


def test_a_store_in_memory_refuses_journal_work():
    async def test(store: SpanStore) -> None:
        with pytest.raises(RuntimeError, match="needs a durable store"):
            await store.run(lambda conn: conn.execute("SELECT 1").fetchall())

    run(test)


def mixed_batch(traces: range, spans_per_trace: int = 3) -> SpanBatch:
    """Spans whose bytes compress (repeated text) and spans whose bytes do not (random bytes)."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    rng = random.Random(traces.start)
    for t in traces:
        for s in range(spans_per_trace):
            span = ss.spans.add(trace_id=tid(t), span_id=sid(t * 100 + s + 1), name=f"op/{t}/{s}")
            span.attributes.append(kv("noise", rng.randbytes(rng.randrange(0, 300)) if t % 2 else "x" * 200))
    return decode(req).batch


def test_released_spans_are_the_bytes_as_received_whatever_their_batch_was_packed_as():
    """The store packs each appended batch's span bytes (compressed when that pays): what a
    release hands back, whole batches or some rows of them, is each span's bytes as received."""
    async def test(store: SpanStore) -> None:
        sent: dict[tuple[bytes, bytes], bytes] = {}
        first = mixed_batch(range(1, 41))                    # compressible and not, mixed
        noise = mixed_batch(range(41, 81, 2), spans_per_trace=1)  # odd traces only: random bytes
        table = first.table
        part = table.slice(7, 50)  # a view at an offset
        sliced = SpanBatch(part, first.resources, first.scopes, dict(Counter(part.column("trace_id").to_pylist())))
        for b in (sliced, noise):
            for row in b.table.select(["trace_id", "span_id", "raw"]).to_pylist():
                sent[(row["trace_id"], row["span_id"])] = row["raw"]
            await store.append(b)
        assert store.buffered_spans == 70
        got: dict[tuple[bytes, bytes], bytes] = {}
        for chosen in ([tid(t) for t in range(3, 30, 3)], [tid(t) for t in range(41, 81, 4)],
                       [tid(t) for t in range(1, 81)]):
            spans = await store.release(chosen)
            assert spans.table.column("raw").num_chunks == 1  # one array, whatever batches the rows came from
            got.update(zip(zip(spans.trace_ids, spans.span_ids), spans.raw))
        assert got == sent and store.buffered_spans == 0

    run(test, generation_rows=40)


def test_a_compacted_generation_keeps_its_stragglers_bytes():
    async def test(store: SpanStore) -> None:
        old = mixed_batch(range(1, 101), spans_per_trace=1)
        expected = dict(zip(old.table.column("trace_id").to_pylist(), old.table.column("raw").to_pylist()))
        await store.append(old)
        await store.append(mixed_batch(range(101, 102), spans_per_trace=1))
        await store.release([tid(t) for t in range(1, 98)])  # compacted to traces 98-100
        spans = await store.release([tid(98), tid(99), tid(100)])
        assert dict(zip(spans.trace_ids, spans.raw)) == {tid(t): expected[tid(t)] for t in (98, 99, 100)}

    run(test, generation_rows=100)


def test_buffered_spans_bytes_are_held_compressed():
    """Spans of repetitive text (as real attributes are) are held in far less than their bytes;
    random bytes (which do not compress) in no more than theirs."""
    async def test(store: SpanStore, b: SpanBatch) -> int:
        await store.append(b)
        return store.memory_bytes()

    for traces, most in ((range(2, 402, 2), 0.2), (range(1, 401, 2), 1.0)):  # text, random bytes
        b = mixed_batch(traces, spans_per_trace=1)
        raw = b.table.column("raw").nbytes
        held = run(lambda store, b=b: test(store, b)) - (b.table.nbytes - raw)  # the other columns as they were
        assert held <= raw * most


def test_a_raw_column_with_nulls_is_kept_as_it_is():
    async def test(store: SpanStore) -> None:
        b = batch(range(1, 4))
        raw = pa.array([None, *b.table.column("raw").to_pylist()[1:]], pa.binary())
        table = b.table.set_column(STORE_SCHEMA.get_field_index("raw"), "raw", raw)
        await store.append(SpanBatch(table, b.resources, b.scopes, b.traces))
        spans = await store.release([tid(1), tid(2), tid(3)])
        assert spans.raw == raw.to_pylist()

    run(test)
