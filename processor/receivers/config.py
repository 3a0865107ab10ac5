"""Configuration of the OTLP receiver (``receivers.otlp``): its gRPC and HTTP protocols, their TLS,
authentication and timeouts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from processor.confmap import Duration, Endpoint, StrictModel


def _readable_file(value: str) -> str:
    path = Path(value)
    if not path.exists():
        raise ValueError(f"no such file: {value}")
    if not path.is_file():
        raise ValueError(f"not a file: {value}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {value}: permission denied")
    return value


ReadableFile = Annotated[str, BeforeValidator(lambda v: _readable_file(str(v)))]
# YAML reads `min_version: 1.2` as a number.
TlsVersion = Annotated[Literal["1.2", "1.3"], BeforeValidator(lambda v: str(v) if isinstance(v, float) else v)]


class TlsServerConfig(StrictModel):
    """The collector's configtls server settings: the server's certificate, and client certificates (mTLS)."""

    cert_file: ReadableFile | None = None
    key_file: ReadableFile | None = None
    client_ca_file: ReadableFile | None = None  # set: clients must present a certificate signed by it
    min_version: TlsVersion = "1.2"  # 1.0 and 1.1 are deprecated (RFC 8996) and refused

    @model_validator(mode="after")
    def _pair(self) -> TlsServerConfig:
        if not (self.cert_file and self.key_file):
            raise ValueError("cert_file and key_file are both required to serve TLS")
        return self


class AuthConfig(StrictModel):
    """``auth.authenticator``: the id of an extension in ``service.extensions`` that checks every request."""

    authenticator: str


class GrpcServerConfig(StrictModel):
    endpoint: Endpoint = "127.0.0.1:4317"
    max_recv_msg_size_mib: int = Field(4, gt=0)
    max_concurrent_streams: int = Field(0, ge=0)  # 0: gRPC's default
    tls: TlsServerConfig | None = None
    auth: AuthConfig | None = None

    @model_validator(mode="after")
    def _grpcio_limits(self) -> GrpcServerConfig:
        if self.tls is not None and self.tls.min_version != "1.2":
            # grpcio's ssl_server_credentials has no minimum-version setting; its floor is TLS 1.2.
            raise ValueError("tls.min_version: grpcio cannot require TLS 1.3 (its minimum is fixed at 1.2); "
                             "leave min_version at 1.2 for gRPC, or require 1.3 in a proxy in front")
        return self


class HttpServerConfig(StrictModel):
    endpoint: Endpoint = "127.0.0.1:4318"
    max_request_body_size: int = Field(20 * 1024 * 1024, gt=0)  # bytes, after decompression
    traces_url_path: str = "/v1/traces"
    tls: TlsServerConfig | None = None
    auth: AuthConfig | None = None
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

    def authenticators(self) -> dict[str, str]:
        """The extension each protocol's ``auth.authenticator`` names, by key path under this receiver."""
        return {f"protocols.{name}.auth.authenticator": server.auth.authenticator
                for name, server in (("grpc", self.protocols.grpc), ("http", self.protocols.http))
                if server is not None and server.auth is not None}
