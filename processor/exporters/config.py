"""Configuration of the exporters (``exporters.<type>``): TLS, retry, sending queue and each type's own keys."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from processor.confmap import Duration, StrictModel


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


class QueueConfig(StrictModel):
    enabled: bool = True
    num_consumers: int = Field(10, gt=0)
    queue_size: int = Field(1000, gt=0)  # batches


class OtlpExporterConfig(StrictModel):
    """The ``otlp_grpc`` exporter's keys; ``otlp_http`` adds ``traces_endpoint``."""

    endpoint: str = Field(min_length=1)  # "" would be a channel to nowhere that drops every span
    tls: TlsClientConfig = TlsClientConfig()
    # The collector's YAML takes `x-tenant: 42`; a header value is text either way.
    headers: dict[str, Annotated[str, BeforeValidator(_header_value)]] = {}
    compression: Literal["gzip", "none", ""] = "gzip"
    timeout: Duration = 5.0
    retry_on_failure: RetryConfig = RetryConfig()
    sending_queue: QueueConfig = QueueConfig()

    # grpcio's channel credentials always verify the server's certificate: there is no switch.
    can_skip_verify: ClassVar[bool] = False

    @model_validator(mode="after")
    def _skip_verify(self) -> OtlpExporterConfig:
        if self.tls.insecure_skip_verify and not self.can_skip_verify:
            raise ValueError("tls.insecure_skip_verify is not supported by the gRPC exporter: grpcio always "
                             "verifies the server's certificate; trust it with tls.ca_file (a self-signed "
                             "certificate can be its own CA), or use the otlp_http exporter, which can skip "
                             "verification")
        return self


class OtlpHttpExporterConfig(OtlpExporterConfig):
    traces_endpoint: str | None = None  # default: endpoint + /v1/traces

    can_skip_verify: ClassVar[bool] = True

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
    compression: Literal["gzip", "none", ""] = "none"


class DebugExporterConfig(StrictModel):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"
