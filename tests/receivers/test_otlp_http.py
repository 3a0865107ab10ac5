"""The HTTP receiver against misbehaving connections: a client that disconnects mid-body is one
debug line and a count, not a traceback; headers or bodies trickled in (slowloris), silent and
idle connections are dropped after their timeouts; a gzip body inflating holds up no other request;
the receiver keeps serving throughout."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time

import pytest
import requests

from tests.support.harness import config_dict, grpc_exporter, simple_request, start_pipeline, wait_until
from tests.support.otlp_sink import OtlpGrpcSink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # real sockets and timeouts

TIMEOUT = 0.5  # read_timeout, read_header_timeout and idle_timeout of the pipeline under test


@pytest.fixture(scope="module")
def running():
    with OtlpGrpcSink() as sink:
        p = start_pipeline(config_dict({"otlp_grpc": grpc_exporter(sink.port)},
                                       http={"read_timeout": TIMEOUT, "read_header_timeout": TIMEOUT,
                                             "idle_timeout": TIMEOUT}))
        yield p
        p.stop()


def connect(running) -> socket.socket:
    return socket.create_connection(("127.0.0.1", running.ports["otlp/http"]), timeout=5)


def head(length: int) -> bytes:
    return (f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def requests_counted(running, code: str) -> float:
    return running.metric("faulttrace_receiver_requests_total", receiver="otlp", transport="http", code=code)


def closed_by_server(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket timeout: it did not)."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def assert_serving(running) -> None:
    reply = requests.post(running.http_url, data=simple_request(500).SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=5)
    assert reply.status_code == 200


def test_a_client_disconnecting_mid_body_is_one_debug_line(running, caplog):
    caplog.set_level(logging.DEBUG)
    before = requests_counted(running, "499")
    body = simple_request(501).SerializeToString()
    with connect(running) as conn:
        conn.sendall(head(len(body)) + body[: len(body) // 2])
        time.sleep(0.1)
    wait_until(lambda: requests_counted(running, "499") == before + 1, what="the disconnect to be counted")
    ours = [r for r in caplog.records if "disconnected before its body arrived" in r.getMessage()]
    assert [(r.levelno, r.name) for r in ours] == [(logging.DEBUG, "processor.receivers.otlp_http")]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert_serving(running)


def test_headers_trickled_in_are_dropped_after_read_header_timeout(running):
    with connect(running) as conn:
        start = time.monotonic()
        conn.sendall(b"POST /v1/traces HTTP/1.1\r\n")
        with pytest.raises(OSError):  # the server closes: a write fails (EPIPE/ECONNRESET) or recv gets b""
            for i in range(40):
                conn.sendall(f"X-Slow-{i}: 1\r\n".encode())
                time.sleep(0.1)
                conn.setblocking(False)
                try:
                    if conn.recv(1) == b"":
                        raise ConnectionResetError("closed by the server")
                except BlockingIOError:
                    pass
                finally:
                    conn.setblocking(True)
        assert TIMEOUT * 0.9 < time.monotonic() - start < TIMEOUT + 2
    assert_serving(running)


def test_a_silent_connection_is_dropped_after_read_header_timeout(running):
    with connect(running) as conn:
        start = time.monotonic()
        assert closed_by_server(conn) == b""
        assert TIMEOUT * 0.9 < time.monotonic() - start < TIMEOUT + 2


def test_an_idle_keep_alive_connection_is_dropped_after_idle_timeout(running):
    body = simple_request(502).SerializeToString()
    with connect(running) as conn:
        conn.sendall(head(len(body)) + body)
        start = time.monotonic()
        reply = closed_by_server(conn)
        assert reply.startswith(b"HTTP/1.1 200")
        assert TIMEOUT * 0.9 < time.monotonic() - start < TIMEOUT + 2


def test_a_body_trickled_in_gets_408_and_the_connection_is_closed(running, caplog):
    caplog.set_level(logging.WARNING)
    before = requests_counted(running, "408")
    with connect(running) as conn:
        start = time.monotonic()
        conn.sendall(head(10_000) + b"\x0a")
        reply = b""
        for _ in range(40):
            try:
                conn.sendall(b"\x00")
            except OSError:
                break
            time.sleep(0.1)
            conn.setblocking(False)
            try:
                reply += conn.recv(65536)
            except BlockingIOError:
                pass
            finally:
                conn.setblocking(True)
            if reply:
                break
        reply += closed_by_server(conn)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert b"read_timeout" in reply
    assert TIMEOUT * 0.9 < time.monotonic() - start < TIMEOUT + 2
    assert requests_counted(running, "408") == before + 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert_serving(running)


def test_a_gzip_body_inflating_does_not_stall_other_requests(running, monkeypatch):
    """gzip bodies inflate off the event loop: while one is held mid-inflate, other requests
    (plain HTTP here) are answered, and the held one is answered once it finishes."""
    from concurrent.futures import ThreadPoolExecutor

    from processor.receivers import otlp_http

    entered, go_on = threading.Event(), threading.Event()
    inflate = otlp_http._inflate

    def held(body: bytes, limit: int) -> bytes:
        entered.set()
        assert go_on.wait(10), "never released"
        return inflate(body, limit)

    monkeypatch.setattr(otlp_http, "_inflate", held)
    body = gzip.compress(simple_request(503).SerializeToString())
    with ThreadPoolExecutor(1) as pool:
        gzipped = pool.submit(requests.post, running.http_url, data=body, timeout=15,
                              headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        try:
            assert entered.wait(10), "the gzip body never reached _inflate"
            assert_serving(running)  # answered while the gzip body is still being inflated
            assert not gzipped.done()
        finally:
            go_on.set()
        assert gzipped.result().status_code == 200
