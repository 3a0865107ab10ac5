"""OTLP/gRPC receiver: ``opentelemetry.proto.collector.trace.v1.TraceService/Export``.

The request arrives as raw bytes (no generated stub deserializes it), so a
malformed message becomes INVALID_ARGUMENT with our own message and decoding
happens off the event loop.  gRPC itself enforces ``max_recv_msg_size_mib``
(RESOURCE_EXHAUSTED) and decompresses gzip; ``keepalive`` maps to grpcio's
channel arguments (``receivers.config.grpc_server_options``).  With ``tls`` the port serves
TLS (client certificates required with ``client_ca_file``); with ``auth``
every call must carry ``authorization`` metadata the named authenticator
accepts, else UNAUTHENTICATED, which says nothing about the expected value.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from processor.extensions.factory import ServerAuthenticator
from processor.receivers.config import GrpcServerConfig, grpc_server_options
from processor.receivers.decode import MalformedRequest
from processor.receivers.ingest import Encoding, Ingest, Overloaded
from processor.receivers.status import UNAUTHENTICATED_MESSAGE, status
from processor.receivers.tls import grpc_credentials, listening_line, warn_tokens_in_clear
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _check_free(endpoint: str) -> None:
    """OSError if ``endpoint``'s port is taken: grpcio would only raise RuntimeError and print to stderr."""
    host, _, port = endpoint.rpartition(":")
    if int(port) == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError:
        return  # leave the verdict to grpcio
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpcio binds
            try:
                probe.bind(address)
            except OSError as err:
                if err.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise OSError(os.strerror(err.errno)) from None


class GrpcReceiver:
    transport = "grpc"

    def __init__(self, component_id: str, config: GrpcServerConfig, ingest: Ingest, telemetry: Telemetry,
                 authenticator: ServerAuthenticator | None = None) -> None:
        self.component_id = component_id
        self._config = config
        self._ingest = ingest
        self._telemetry = telemetry
        self._auth = authenticator
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def _where(self) -> str:
        return f"receivers.{self.component_id}.protocols.grpc"

    async def start(self) -> int:
        """Listen; OSError naming the key path and endpoint when the port or the TLS files fail."""
        credentials = grpc_credentials(self._config.tls, f"{self._where}.tls") if self._config.tls else None
        options = grpc_server_options(self._config)
        endpoint = self._config.endpoint
        try:
            _check_free(endpoint)
        except OSError as err:
            raise OSError(f"{self._where}: cannot listen on {endpoint}: {err}") from None
        server = grpc.aio.server(options=options)
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # raw bytes in and out
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
        try:
            if credentials is None:
                self.port = server.add_insecure_port(endpoint)
            else:
                self.port = server.add_secure_port(endpoint, credentials)
        except RuntimeError:  # grpcio: "Failed to bind to address …"
            self.port = 0
        if self.port == 0:
            await server.stop(None)
            raise OSError(f"{self._where}: cannot listen on {endpoint}")
        await server.start()
        self._server = server
        warn_tokens_in_clear(self._where, self._auth, encrypted=credentials is not None)
        return self.port

    def describe(self) -> str:
        return listening_line("gRPC", self.component_id, self._config.endpoint, self.port, self._config.tls, self._auth)

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    def _count(self, code: grpc.StatusCode) -> None:
        self._telemetry.receiver_requests.labels(self.component_id, "grpc", code.name).inc()

    async def _export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if self._auth is not None and not self._auth.authenticate(_authorization(context)):
            self._count(grpc.StatusCode.UNAUTHENTICATED)
            log.debug("%s: refused a call without valid authorization from %s", self._where, context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        try:
            result = await self._ingest.submit(request, Encoding.PROTOBUF, self.component_id, "grpc")
        except MalformedRequest as err:
            self._count(grpc.StatusCode.INVALID_ARGUMENT)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Overloaded as err:
            self._count(grpc.StatusCode.UNAVAILABLE)
            detail = status(grpc.StatusCode.UNAVAILABLE.value[0], str(err), err.retry_after)
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err),
                                trailing_metadata=(("grpc-status-details-bin", detail.SerializeToString()),))
        except Exception:  # component boundary: the server keeps serving
            log.exception("OTLP/gRPC receiver %s: failed to ingest a request", self.component_id)
            self._count(grpc.StatusCode.INTERNAL)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error while storing spans")
        self._count(grpc.StatusCode.OK)
        response = ExportTraceServiceResponse()
        if result.rejected_spans:
            response.partial_success.rejected_spans = result.rejected_spans
            response.partial_success.error_message = result.error_message
        return response.SerializeToString()


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None

