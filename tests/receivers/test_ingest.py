"""processor.receivers.ingest: where a request is decoded and stored (the event loop or the worker thread)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from processor.model import SpanBatch
from processor.receivers import ingest as ingest_module
from processor.receivers.decode import MalformedRequest
from processor.receivers.ingest import Encoding, Ingest
from processor.service.telemetry import Telemetry
from processor.store import SpanStore
from tests.support.harness import otlp_json, simple_request


def stored_on(store_path: str | None, body: bytes, encoding: Encoding) -> tuple[bool, int]:
    """Submit ``body``; whether its spans were appended on the event loop's thread, and how many."""
    threads: list[int] = []

    async def main() -> tuple[bool, int]:
        store = SpanStore(store_path)
        await store.open()
        append = store.append_now

        def recording(batch: SpanBatch) -> None:  # a spy on the store's append
            threads.append(threading.get_ident())
            append(batch)

        store.append_now = recording  # type: ignore[method-assign]
        ingest = Ingest(store, 1_000, Telemetry(), on_stored=lambda batch: None)
        try:
            accepted = await ingest.submit(body, encoding, "otlp", "grpc")
        finally:
            ingest.close()
            await store.close()
        return threads == [threading.get_ident()], accepted.accepted_spans

    return asyncio.run(main())


def test_a_small_protobuf_body_is_stored_on_the_event_loop():
    assert stored_on(None, simple_request(1, traces=3).SerializeToString(), Encoding.PROTOBUF) == (True, 6)


def test_a_large_body_is_stored_by_the_worker_thread(monkeypatch):
    body = simple_request(1, traces=3).SerializeToString()
    monkeypatch.setattr(ingest_module, "INLINE_BYTES", len(body) - 1)
    assert stored_on(None, body, Encoding.PROTOBUF) == (False, 6)


def test_json_is_stored_by_the_worker_thread():
    body = json.dumps(otlp_json(simple_request(1, traces=3))).encode()
    assert stored_on(None, body, Encoding.JSON) == (False, 6)


def test_a_journaled_store_is_appended_to_by_the_worker_thread(tmp_path):
    # DuckDB journals without the interpreter lock: the event loop keeps serving meanwhile.
    body = simple_request(1, traces=3).SerializeToString()
    assert stored_on(str(tmp_path / "journal.duckdb"), body, Encoding.PROTOBUF) == (False, 6)


@pytest.mark.parametrize("encoding", [Encoding.PROTOBUF, Encoding.JSON])
def test_a_malformed_body_is_refused_either_way(encoding):
    with pytest.raises(MalformedRequest):
        stored_on(None, b"\xff\xff\xff", encoding)
