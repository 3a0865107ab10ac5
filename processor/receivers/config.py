"""Configuration of the OTLP receiver (``receivers.otlp``): its gRPC and HTTP protocols, their TLS,
authentication and timeouts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from processor.confmap import Duration, Endpoint, StrictModel, TlsVersion


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


class KeepaliveServerParameters(StrictModel):
    """configgrpc's ``keepalive.server_parameters``; unset: grpcio's defaults (``grpc_server_options``)."""

    max_connection_idle: Duration | None = None
    max_connection_age: Duration | None = None
    max_connection_age_grace: Duration | None = None
    time: Duration | None = None      # ping a client silent this long
    timeout: Duration | None = None   # and close its connection if the ping is not answered in this


class KeepaliveEnforcementPolicy(StrictModel):
    """configgrpc's ``keepalive.enforcement_policy``: how often clients may ping."""

    min_time: Duration | None = None
    permit_without_stream: bool = False


class KeepaliveServerConfig(StrictModel):
    server_parameters: KeepaliveServerParameters = KeepaliveServerParameters()
    enforcement_policy: KeepaliveEnforcementPolicy | None = None


class GrpcServerConfig(StrictModel):
    endpoint: Endpoint = "127.0.0.1:4317"
    max_recv_msg_size_mib: int = Field(4, gt=0)
    max_concurrent_streams: int = Field(0, ge=0)  # 0: gRPC's default
    tls: TlsServerConfig | None = None
    auth: AuthConfig | None = None
    keepalive: KeepaliveServerConfig | None = None
    # The collector passes request metadata on with the data (for the batch processor's
    # metadata_keys, the headers_setter extension).  faulttrace regroups spans by trace, so
    # no request's metadata reaches an exporter: accepted, and it changes nothing.
    include_metadata: bool = False

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
    include_metadata: bool = False  # as for gRPC: accepted, changes nothing


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def grpc_server_options(config: GrpcServerConfig) -> list[tuple[str, int]]:
    """grpcio channel arguments for ``config``'s limits and keepalive (as configgrpc maps them to Go's
    keepalive.ServerParameters and EnforcementPolicy)."""
    options = [("grpc.max_receive_message_length", config.max_recv_msg_size_mib * 1024 * 1024),
               ("grpc.so_reuseport", 0)]
    if config.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", config.max_concurrent_streams))
    if config.keepalive is None:
        return options
    params = config.keepalive.server_parameters
    for name, value in (("grpc.max_connection_idle_ms", params.max_connection_idle),
                        ("grpc.max_connection_age_ms", params.max_connection_age),
                        ("grpc.max_connection_age_grace_ms", params.max_connection_age_grace),
                        ("grpc.keepalive_time_ms", params.time),
                        ("grpc.keepalive_timeout_ms", params.timeout)):
        if value:  # 0, as in Go, means "no limit": grpcio's default
            options.append((name, _ms(value)))
    policy = config.keepalive.enforcement_policy
    if policy is not None:
        if policy.min_time:
            # A client pinging more often is sent GOAWAY (too_many_pings), as Go's EnforcementPolicy.MinTime.
            options.append(("grpc.http2.min_ping_interval_without_data_ms", _ms(policy.min_time)))
        options.append(("grpc.keepalive_permit_without_calls", int(policy.permit_without_stream)))
    return options


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


# Keys of the collector's otlp receiver that faulttrace does not have, with what to do instead
# (``*`` is one key of the path).  ``processor.config`` reports them instead of "unknown key".
COLLECTOR_ONLY_KEYS: dict[str, str] = {
    "protocols.*.transport": "faulttrace listens on TCP only; remove it",
    "protocols.grpc.read_buffer_size": "grpcio sizes its buffers itself; remove it",
    "protocols.grpc.write_buffer_size": "grpcio sizes its buffers itself; remove it",
    "protocols.http.cors": "faulttrace does not serve browsers; put a collector with cors in front of it",
    "protocols.http.response_headers": "remove it, or add headers in a proxy in front",
    "protocols.http.compression_algorithms": "faulttrace accepts gzip, zstd and uncompressed bodies; remove it",
    "protocols.http.logs_url_path": "faulttrace receives traces only; remove it",
    "protocols.http.metrics_url_path": "faulttrace receives traces only; remove it",
    "protocols.http.write_timeout": "replies are small protobuf messages written at once; remove it",
    "protocols.*.tls.ca_file": "on a server, name the CA that signs client certificates with client_ca_file",
    "protocols.*.tls.max_version": "faulttrace serves TLS 1.2 and 1.3; set min_version instead",
    "protocols.*.tls.cipher_suites": "the TLS library's defaults apply; remove it",
    "protocols.*.tls.reload_interval": "certificates are read at start; restart faulttrace to load new ones",
    "protocols.*.tls.include_system_ca_certs_pool": "name the CA in client_ca_file; remove it",
    "protocols.*.tls.client_ca_file_reload": "certificates are read at start; restart faulttrace to load new ones",
    "protocols.*.tls.cert_pem": "write the certificate to a file and give cert_file",
    "protocols.*.tls.key_pem": "write the key to a file and give key_file",
    "protocols.*.tls.ca_pem": "write the CA to a file and give client_ca_file",
    "protocols.*.auth.request_params": "the authenticator reads the authorization header only; remove it",
}
