"""Configuration of the OTLP receiver (``receivers.otlp``): its gRPC and HTTP protocols, and the HTTP
timeouts."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from processor.confmap import Duration, Endpoint, StrictModel


class GrpcServerConfig(StrictModel):
    endpoint: Endpoint = "127.0.0.1:4317"
    max_recv_msg_size_mib: int = Field(4, gt=0)
    max_concurrent_streams: int = Field(0, ge=0)  # 0: gRPC's default


class HttpServerConfig(StrictModel):
    endpoint: Endpoint = "127.0.0.1:4318"
    max_request_body_size: int = Field(20 * 1024 * 1024, gt=0)  # bytes, after decompression
    traces_url_path: str = "/v1/traces"
    # The whole body must arrive within read_timeout once its headers have (0: no limit).  The
    # collector's default is no limit; a trickled body would then hold a connection forever.
    read_timeout: Duration = 60.0
    # aiohttp has one timer for both: from a connection's start, or the end of its previous
    # response, until the next request's headers are complete.  It is set to the smaller of the
    # two, so a connection that sends its headers slowly, or nothing, is dropped.  Unlike the
    # collector, 0 is refused: it would turn aiohttp's keep-alive off, not lift the limit.
    read_header_timeout: Annotated[Duration, Field(gt=0)] = 60.0
    idle_timeout: Annotated[Duration, Field(gt=0)] = 60.0


class OtlpProtocols(StrictModel):
    grpc: GrpcServerConfig | None = None
    http: HttpServerConfig | None = None

    @field_validator("grpc", "http", mode="before")
    @classmethod
    def _empty_means_defaults(cls, v: Any) -> Any:
        # `grpc:` with no value turns the protocol on with its defaults, as in the collector.
        return {} if v is None else v


class OtlpReceiverConfig(StrictModel):
    protocols: OtlpProtocols = OtlpProtocols(grpc=GrpcServerConfig(), http=HttpServerConfig())
