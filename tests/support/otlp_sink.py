"""Real OTLP trace sinks for tests and the benchmark: gRPC and HTTP servers that record.

Both run in their own threads (sync gRPC server, ``http.server``), so a plain
pytest function and code inside an event loop can use them alike; from a
coroutine, wait with ``await sink.wait_for_spans_async(n)`` so the loop keeps
running.  Each binds ``127.0.0.1:0`` (or a given port), stores every accepted
``ExportTraceServiceRequest`` with its raw bytes and headers, and can be told
to fail the next requests (``fail_next``, optionally with a RetryInfo /
``Retry-After`` hint) or to go down and come back on the same port
(``stop`` / ``restart``).  Like a real collector, each refuses a request it
cannot take whole, as malformed (INVALID_ARGUMENT / 400): one that does not
parse as an ``ExportTraceServiceRequest`` (strictly: UTF-8 strings, nesting
limit) or holds an id of the wrong length; told to, also one whose bytes
contain a marker (``refuse_containing``).  ``ByteCountingProxy`` sits in front of a sink to
show what went over the wire (e.g. that gzip really compressed it).
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import sys
import threading
import time
from collections import deque
from concurrent import futures
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@dataclass(frozen=True)
class Failure:
    code: Any  # grpc.StatusCode for the gRPC sink, an HTTP status int for the HTTP sink
    retry_after: float | str | None = None  # str: sent verbatim as Retry-After (an HTTP-date)
    message: str = ""  # why, when the sink refused the request itself


@dataclass(frozen=True)
class Received:
    """One request as the sink saw it (accepted or failed on purpose)."""

    raw: bytes  # the ExportTraceServiceRequest bytes, after any decompression
    headers: dict[str, str]  # lowercase keys
    at: float  # time.monotonic()
    failed_with: Any = None


def collector_problem(req: ExportTraceServiceRequest) -> str:
    """Why a collector refuses a parsed request ("" if it does not): an id of the wrong
    length (empty is taken), as pdata's TraceID/SpanID unmarshalling refuses it."""
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                ids = [(span.trace_id, 16), (span.span_id, 8), (span.parent_span_id, 8)]
                ids += [pair for link in span.links for pair in ((link.trace_id, 16), (link.span_id, 8))]
                for value, size in ids:
                    if len(value) not in (0, size):
                        return f"invalid length for ID: {len(value)} bytes, expected {size}"
    return ""


class _Recorder:
    """Storage and failure injection shared by both sinks; thread-safe."""

    refusal: Any  # the status a request the sink cannot take gets

    def __init__(self, keep: bool) -> None:
        self._keep = keep  # False: count spans only, keep no messages (benchmarks)
        self._cond = threading.Condition()
        self._requests: list[ExportTraceServiceRequest] = []
        self._received: list[Received] = []
        self._failures: deque[Failure] = deque()
        self._span_count = 0
        self._refuse_marker: bytes | None = None

    def refuse_containing(self, marker: bytes | None) -> None:
        """Refuse, as malformed, every request whose bytes contain ``marker`` (None: stop)."""
        with self._cond:
            self._refuse_marker = marker

    def fail_next(self, n: int, code: Any, retry_after: float | str | None = None) -> None:
        """Fail the next ``n`` requests with ``code``, optionally asking the client to wait."""
        with self._cond:
            self._failures.extend(Failure(code, retry_after) for _ in range(n))

    @property
    def requests(self) -> list[ExportTraceServiceRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def received(self) -> list[Received]:
        """Every request that reached the sink, including the ones failed on purpose."""
        with self._cond:
            return list(self._received)

    @property
    def span_count(self) -> int:
        with self._cond:
            return self._span_count

    def spans(self) -> list[Span]:
        return [span for req in self.requests for rs in req.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[Span]:
        """Block until at least ``n`` spans arrived; AssertionError on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._span_count >= n, timeout):
                raise AssertionError(f"sink received {self._span_count} spans, expected {n} "
                                     f"within {timeout}s")
        return self.spans()

    async def wait_for_spans_async(self, n: int, timeout: float = 10.0) -> list[Span]:
        return await asyncio.to_thread(self.wait_for_spans, n, timeout)

    def _take(self, raw: bytes, headers: dict[str, str]) -> Failure | None:
        """Record one incoming request; the failure to answer with, if one is pending or the
        sink cannot take the request."""
        with self._cond:
            failure = self._failures.popleft() if self._failures else None
            marker = self._refuse_marker
        req = None
        if failure is None:
            # Parsed outside the lock: concurrent handler threads must not queue behind one parse.
            req, problem = self._parse(raw, marker)
            if req is None:
                failure = Failure(self.refusal, message=problem)
        with self._cond:
            self._received.append(Received(raw if self._keep else b"", headers, time.monotonic(),
                                           failure.code if failure else None))
            if req is not None:
                if self._keep:
                    self._requests.append(req)
                self._span_count += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
                self._cond.notify_all()
        return failure


    @staticmethod
    def _parse(raw: bytes, marker: bytes | None) -> tuple[ExportTraceServiceRequest | None, str]:
        try:
            req = ExportTraceServiceRequest.FromString(raw)
        except DecodeError as err:
            return None, f"cannot decode the request: {err}"
        problem = collector_problem(req)
        if not problem and marker is not None and marker in raw:
            problem = f"the request holds {marker!r}, which this sink refuses"
        return (None, problem) if problem else (req, "")


def retry_info_status(code: int, message: str, delay: float) -> bytes:
    """A google.rpc.Status with a RetryInfo detail, as sent in ``grpc-status-details-bin``."""
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=int(delay), nanos=int(round((delay - int(delay)) * 1e9))))
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code, message=message, details=[detail]).SerializeToString()


class OtlpGrpcSink(_Recorder):
    """``TraceService/Export`` on 127.0.0.1; ``fail_next`` takes a ``grpc.StatusCode``.

    ``tls=(cert_pem, key_pem)`` serves TLS; ``client_ca`` (PEM) then requires client certificates.
    """

    refusal = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, port: int = 0, keep: bool = True, tls: tuple[bytes, bytes] | None = None,
                 client_ca: bytes | None = None) -> None:
        super().__init__(keep)
        self._tls = tls
        self._client_ca = client_ca
        self._server: grpc.Server | None = None
        self.port = self._serve(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def restart(self) -> None:
        """Come back up on the same port."""
        self.stop()
        self._serve(self.port)

    def __enter__(self) -> OtlpGrpcSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, port: int) -> int:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            # No (de)serializers: the handler sees the request bytes exactly as sent.
            "Export": grpc.unary_unary_rpc_method_handler(self._export),
        })
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[handler],
                             options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        address = f"127.0.0.1:{port}"
        if self._tls is None:
            bound = server.add_insecure_port(address)
        else:
            cert, key = self._tls
            credentials = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=self._client_ca, require_client_auth=self._client_ca is not None)
            bound = server.add_secure_port(address, credentials)
        if not bound:
            raise OSError(f"cannot bind 127.0.0.1:{port}")
        server.start()
        self._server = server
        return bound

    def _export(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        headers = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        failure = self._take(raw, headers)
        if failure is None:
            return ExportTraceServiceResponse().SerializeToString()
        message = failure.message or f"sink told to fail with {failure.code.name}"
        if failure.retry_after is not None:
            details = retry_info_status(failure.code.value[0], message, float(failure.retry_after))
            context.set_trailing_metadata((("grpc-status-details-bin", details),))
        context.abort(failure.code, message)
        raise AssertionError("unreachable")  # abort raises


class OtlpHttpSink(_Recorder):
    """``POST /v1/traces`` (protobuf) on 127.0.0.1; ``fail_next`` takes an HTTP status."""

    path = "/v1/traces"
    refusal = HTTPStatus.BAD_REQUEST

    def __init__(self, port: int = 0, keep: bool = True, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(keep)
        self._tls = tls  # a server-side context: serve HTTPS
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = self._serve(port)

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.path}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restart(self) -> None:
        self.stop()
        self._serve(self.port)

    def __enter__(self) -> OtlpHttpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, port: int) -> int:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                sink._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        # A short poll interval makes stop() quick (shutdown() waits for the next poll).
        self._thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True,
                                        name="otlp-http-sink")
        self._thread.start()
        return server.server_address[1]

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in req.headers.items()}
        if req.path != self.path:
            self._reply(req, HTTPStatus.NOT_FOUND, b"")
            return
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        elif headers.get("content-encoding") == "zstd":
            body = zstd.decompress(body)
        failure = self._take(body, headers)
        if failure is None:
            self._reply(req, HTTPStatus.OK, ExportTraceServiceResponse().SerializeToString())
            return
        extra = {}
        if failure.retry_after is not None:
            extra["Retry-After"] = str(failure.retry_after)
        status = status_pb2.Status(message=failure.message or f"sink told to fail with {failure.code}")
        self._reply(req, failure.code, status.SerializeToString(), extra)

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, code: int, body: bytes,
               headers: dict[str, str] | None = None) -> None:
        req.send_response(code)
        req.send_header("Content-Type", "application/x-protobuf")
        req.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(body)


class ByteCountingProxy:
    """A TCP proxy on 127.0.0.1 counting the bytes clients send to ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._lock = threading.Lock()
        self._upstream_bytes = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="byte-counting-proxy").start()

    @property
    def upstream_bytes(self) -> int:
        """Bytes clients sent through the proxy so far."""
        with self._lock:
            return self._upstream_bytes

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if count:
                    with self._lock:
                        self._upstream_bytes += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            src.close()  # dst is the other pump's src and is closed there
