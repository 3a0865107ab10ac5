"""Configuration of the exporters (``exporters.<type>``): TLS, retry, sending queue and each type's own keys."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from processor.confmap import Duration, StrictModel, TlsVersion, collector_only

# The collector's other codecs: refused with what faulttrace has instead.
_OTHER_CODECS = ("snappy", "zlib", "deflate", "lz4", "x-snappy-framed")


def _compression(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in _OTHER_CODECS:
        raise ValueError(collector_only(f"{value!r}; use gzip or zstd (or none)"))
    return value


Compression = Annotated[Literal["gzip", "zstd", "none", ""], BeforeValidator(_compression)]


def _header_value(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else value


class TlsClientConfig(StrictModel):
    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    min_version: TlsVersion = "1.2"
    server_name_override: str = ""  # the name the server's certificate must carry, if not the endpoint's host

    @model_validator(mode="after")
    def _pair(self) -> TlsClientConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        return self


class RetryConfig(StrictModel):
    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = Field(0.5, ge=0, le=1)
    multiplier: float = Field(1.5, ge=1)
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0  # 0: retry forever


class KeepaliveClientConfig(StrictModel):
    """configgrpc's client ``keepalive``: ping an idle connection every ``time``, drop it when a
    ping is not answered within ``timeout``."""

    time: Annotated[Duration, Field(gt=0)] = 30.0
    timeout: Annotated[Duration, Field(gt=0)] = 10.0
    permit_without_stream: bool = False  # ping even when no export is in flight


class QueueConfig(StrictModel):
    enabled: bool = True
    num_consumers: int = Field(10, gt=0)
    queue_size: int = Field(1000, gt=0)  # in the sizer's unit
    # What queue_size counts, as in the collector: payloads (a payload is one request, at most 3 MiB
    # or processors.batch.send_batch_max_size spans), spans, or bytes of encoded payload.
    sizer: Literal["requests", "items", "bytes"] = "requests"
    # A full queue always holds the release loop back here (nothing is dropped): the store
    # fills and receivers refuse with a retryable status, which is what the collector's
    # block_on_overflow: false tells a client too.  Either value is accepted.
    block_on_overflow: bool = False
    # The collector's persistent queue (a storage extension's id).  Every payload is already
    # journaled until delivered (processors.faulttrace.storage.path); any id is accepted as
    # asking for that, and refused when the journal is off (":memory:").
    storage: str | None = None


class OtlpExporterConfig(StrictModel):
    """The ``otlp_grpc`` exporter's keys; ``otlp_http`` adds ``traces_endpoint``."""

    endpoint: str = Field(min_length=1)  # "" would be a channel to nowhere that drops every span
    tls: TlsClientConfig = TlsClientConfig()
    # The collector's YAML takes `x-tenant: 42`; a header value is text either way.
    headers: dict[str, Annotated[str, BeforeValidator(_header_value)]] = {}
    compression: Compression = "gzip"
    timeout: Duration = 5.0
    retry_on_failure: RetryConfig = RetryConfig()
    sending_queue: QueueConfig = QueueConfig()
    keepalive: KeepaliveClientConfig | None = None  # gRPC only

    # grpcio's channel credentials always verify the server's certificate: there is no switch.
    can_skip_verify: ClassVar[bool] = False
    grpc: ClassVar[bool] = True

    @model_validator(mode="after")
    def _grpcio_limits(self) -> OtlpExporterConfig:
        if self.tls.insecure_skip_verify and not self.can_skip_verify:
            raise ValueError("tls.insecure_skip_verify is not supported by the gRPC exporter: grpcio always "
                             "verifies the server's certificate; trust it with tls.ca_file (a self-signed "
                             "certificate can be its own CA), or use the otlp_http exporter, which can skip "
                             "verification")
        if not self.grpc:
            if self.keepalive is not None:
                raise ValueError("keepalive: a gRPC setting; the HTTP exporter keeps idle connections open "
                                 "on its own; remove it")
            return self
        if self.compression == "zstd":
            raise ValueError("compression: zstd is not available with gRPC here: grpcio compresses with gzip "
                             "only; use gzip, or the otlp_http exporter, which sends zstd")
        if self.tls.min_version != "1.2":
            raise ValueError("tls.min_version: grpcio cannot require TLS 1.3 of a server (its minimum is fixed "
                             "at 1.2); leave min_version at 1.2, or use the otlp_http exporter")
        return self


class OtlpHttpExporterConfig(OtlpExporterConfig):
    traces_endpoint: str | None = None  # default: endpoint + /v1/traces

    can_skip_verify: ClassVar[bool] = True
    grpc: ClassVar[bool] = False

    @field_validator("endpoint", "traces_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        # As the collector's otlphttp: a URL. Guessing a scheme for "host:4318" picks https
        # or http behind the user's back, and the wrong one fails every export.
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not a URL: write http://{value} or https://{value}")
        return value


class FileExporterConfig(StrictModel):
    path: str
    compression: Literal["gzip", "none", ""] = "none"  # the collector's file exporter has zstd only


class DebugExporterConfig(StrictModel):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"


# Keys of the collector's exporters that faulttrace's do not have, with what to do instead
# (``*`` is one key of the path).  ``processor.config`` reports them instead of "unknown key".
COLLECTOR_ONLY_KEYS: dict[str, str] = {
    "auth": "send the token as a header: headers: {authorization: \"Bearer ${env:TOKEN}\"}",
    "balancer_name": "faulttrace sends to one endpoint with grpcio's default (pick_first); remove it, "
                     "or use a collector's loadbalancing exporter downstream",
    "authority": "remove it; tls.server_name_override sets the name the server's certificate is checked against",
    "read_buffer_size": "grpcio and aiohttp size their buffers themselves; remove it",
    "write_buffer_size": "grpcio and aiohttp size their buffers themselves; remove it",
    "wait_for_ready": "calls fail fast and retry_on_failure retries them; remove it",
    "encoding": "the otlp_http exporter sends protobuf; remove it",
    "proxy_url": "faulttrace connects to the endpoint directly; remove it",
    "logs_endpoint": "faulttrace exports traces only; remove it",
    "metrics_endpoint": "faulttrace exports traces only; remove it",
    "profiles_endpoint": "faulttrace exports traces only; remove it",
    "max_idle_conns": "aiohttp's pool applies; remove it",
    "max_idle_conns_per_host": "aiohttp's pool applies; remove it",
    "max_conns_per_host": "aiohttp's pool applies; remove it",
    "idle_conn_timeout": "aiohttp's pool applies; remove it",
    "disable_keep_alives": "remove it",
    "http2_read_idle_timeout": "the otlp_http exporter speaks HTTP/1.1; remove it",
    "http2_ping_timeout": "the otlp_http exporter speaks HTTP/1.1; remove it",
    "cookies": "remove it",
    "compression_params": "faulttrace compresses at a fast fixed level; remove it",
    "tls.max_version": "TLS 1.2 and 1.3 are negotiated; set min_version instead",
    "tls.cipher_suites": "the TLS library's defaults apply; remove it",
    "tls.reload_interval": "certificates are read at start; restart faulttrace to load new ones",
    "tls.include_system_ca_certs_pool": "without ca_file the system's CAs are used; with it, only that CA",
    "tls.ca_pem": "write the CA to a file and give ca_file",
    "tls.cert_pem": "write the certificate to a file and give cert_file",
    "tls.key_pem": "write the key to a file and give key_file",
    "sending_queue.batch": "faulttrace sends each release's traces in payloads of at most 3 MiB; cap spans per "
                           "payload with processors.batch.send_batch_max_size",
    "sending_queue.wait_for_result": "a payload stays in the journal until delivered, which is what waiting "
                                     "for the result protects; remove it",
    "retry_on_failure.max_elapsed_time_per_request": "remove it; max_elapsed_time bounds each payload",
    "sampling_initial": "the debug exporter logs every trace; remove it",
    "sampling_thereafter": "the debug exporter logs every trace; remove it",
    "use_internal_logger": "the debug exporter writes to faulttrace's log; remove it",
    "rotation": "rotate the file exporter's output with logrotate (copytruncate); remove it",
    "format": "the file exporter writes OTLP/JSON; remove it",
    "flush_interval": "the file exporter writes each payload as it comes; remove it",
    "append": "the file exporter appends; remove it",
    "group_by": "remove it; one file exporter writes one path",
}
