"""Configuration of the OTLP receiver (``receivers.otlp``): its gRPC and HTTP protocols."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from processor.confmap import Endpoint, StrictModel


class GrpcServerConfig(StrictModel):
    endpoint: Endpoint = "127.0.0.1:4317"
    max_recv_msg_size_mib: int = Field(4, gt=0)
    max_concurrent_streams: int = Field(0, ge=0)  # 0: gRPC's default


class HttpServerConfig(StrictModel):
    endpoint: Endpoint = "127.0.0.1:4318"
    max_request_body_size: int = Field(20 * 1024 * 1024, gt=0)  # bytes, after decompression
    traces_url_path: str = "/v1/traces"


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
