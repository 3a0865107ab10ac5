"""Both OTLP exporters over TLS (and gRPC with a client certificate), with a throwaway cert;
``tls.insecure_skip_verify`` works for HTTP and is refused for gRPC, which cannot honour it."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from processor.config import parse_config
from processor.confmap import ConfigError
from processor.exporters.base import Exporter
from processor.exporters.config import OtlpExporterConfig, OtlpHttpExporterConfig
from processor.exporters.factory import build_exporter
from processor.service.telemetry import Telemetry
from tests.support.exporters import FAST_RETRY, make_request, metric, payload_of
from tests.support.otlp_sink import OtlpGrpcSink, OtlpHttpSink


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA): (cert.pem, key.pem)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


def deliver(exp: Exporter) -> None:
    async def main() -> None:
        await exp.start()
        await exp.export(payload_of(make_request()))
        await exp.shutdown(5)

    asyncio.run(main())


def test_grpc_with_ca_file_and_client_certificate(cert: tuple[Path, Path]) -> None:
    cert_file, key_file = cert
    pem = cert_file.read_bytes()
    telemetry = Telemetry()
    with OtlpGrpcSink(tls=(pem, key_file.read_bytes()), client_ca=pem) as sink:
        tls = {"ca_file": str(cert_file), "cert_file": str(cert_file), "key_file": str(key_file)}
        config = OtlpExporterConfig(endpoint=f"127.0.0.1:{sink.port}", tls=tls, retry_on_failure=FAST_RETRY)
        deliver(build_exporter("otlp", config, telemetry))
        assert len(sink.spans()) == 2


def test_grpc_rejects_an_untrusted_server(cert: tuple[Path, Path]) -> None:
    cert_file, key_file = cert
    telemetry = Telemetry()
    with OtlpGrpcSink(tls=(cert_file.read_bytes(), key_file.read_bytes())) as sink:
        # No ca_file: the system roots do not trust our self-signed certificate.
        config = OtlpExporterConfig(endpoint=f"127.0.0.1:{sink.port}", timeout=1,
                                    retry_on_failure={**FAST_RETRY, "max_elapsed_time": 0.3})
        deliver(build_exporter("otlp", config, telemetry))
        assert sink.received == []
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", "otlp") == 2


def test_http_over_tls(cert: tuple[Path, Path]) -> None:
    cert_file, key_file = cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    with OtlpHttpSink(tls=server_ctx) as sink:
        config = OtlpHttpExporterConfig(endpoint=f"https://127.0.0.1:{sink.port}",
                                        tls={"ca_file": str(cert_file)}, retry_on_failure=FAST_RETRY)
        deliver(build_exporter("otlphttp", config, Telemetry()))
        assert len(sink.spans()) == 2


def test_http_insecure_skip_verify_delivers_to_a_self_signed_server(cert: tuple[Path, Path]) -> None:
    cert_file, key_file = cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    with OtlpHttpSink(tls=server_ctx) as sink:
        # No ca_file: only skipping verification lets the exporter through.
        config = OtlpHttpExporterConfig(endpoint=f"https://127.0.0.1:{sink.port}",
                                        tls={"insecure_skip_verify": True}, retry_on_failure=FAST_RETRY)
        deliver(build_exporter("otlp_http", config, Telemetry()))
        assert len(sink.spans()) == 2


def test_http_verifies_the_server_by_default(cert: tuple[Path, Path]) -> None:
    cert_file, key_file = cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    telemetry = Telemetry()
    with OtlpHttpSink(tls=server_ctx) as sink:
        config = OtlpHttpExporterConfig(endpoint=f"https://127.0.0.1:{sink.port}", timeout=1,
                                        retry_on_failure={**FAST_RETRY, "max_elapsed_time": 0.3})
        deliver(build_exporter("otlp_http", config, telemetry))
        assert sink.received == []
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", "otlp_http") == 2


@pytest.mark.parametrize("kind", ["otlp_grpc", "otlp"])
def test_grpc_refuses_insecure_skip_verify_saying_why_and_what_to_do(kind: str) -> None:
    doc = {"receivers": {"otlp": {}},
           "exporters": {kind: {"endpoint": "backend:4317", "tls": {"insecure_skip_verify": True}}},
           "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": [kind]}}}}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "<test>")
    [message] = err.value.problems
    assert message.startswith(f"exporters.{kind}: tls.insecure_skip_verify is not supported by the gRPC "
                              "exporter: grpcio always verifies the server's certificate")
    assert "tls.ca_file" in message and "otlp_http" in message
    doc["exporters"] = {"otlp_http": {**doc["exporters"][kind], "endpoint": "https://backend:4318"}}
    doc["service"]["pipelines"]["traces"]["exporters"] = ["otlp_http"]
    assert parse_config(doc, "<test>").exporters["otlp_http"].tls.insecure_skip_verify


@pytest.fixture(scope="module")
def named_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for backend.internal only (no IP): reached at 127.0.0.1, it
    verifies only when the exporter is told the name to expect."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls-named")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=backend.internal",
                    "-addext", "subjectAltName=DNS:backend.internal"],
                   check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


@pytest.mark.parametrize("override", ["backend.internal", ""])
def test_grpc_server_name_override_names_the_certificate_to_expect(named_cert: tuple[Path, Path],
                                                                    override: str) -> None:
    cert_file, key_file = named_cert
    telemetry = Telemetry()
    with OtlpGrpcSink(tls=(cert_file.read_bytes(), key_file.read_bytes())) as sink:
        config = OtlpExporterConfig(endpoint=f"127.0.0.1:{sink.port}", timeout=1,
                                    tls={"ca_file": str(cert_file), "server_name_override": override},
                                    retry_on_failure={**FAST_RETRY, "max_elapsed_time": 0.3})
        deliver(build_exporter("otlp", config, telemetry))
        assert len(sink.spans()) == (2 if override else 0)


@pytest.mark.parametrize("override", ["backend.internal", ""])
def test_http_server_name_override_names_the_certificate_to_expect(named_cert: tuple[Path, Path],
                                                                    override: str) -> None:
    cert_file, key_file = named_cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    with OtlpHttpSink(tls=server_ctx) as sink:
        config = OtlpHttpExporterConfig(endpoint=f"https://127.0.0.1:{sink.port}", timeout=1,
                                        tls={"ca_file": str(cert_file), "server_name_override": override},
                                        retry_on_failure={**FAST_RETRY, "max_elapsed_time": 0.3})
        deliver(build_exporter("otlp_http", config, Telemetry()))
        assert len(sink.spans()) == (2 if override else 0)


@pytest.mark.parametrize("server_max, delivered", [(ssl.TLSVersion.TLSv1_2, False), (ssl.TLSVersion.TLSv1_3, True)])
def test_http_min_version_13_refuses_a_tls12_server(cert: tuple[Path, Path], server_max: ssl.TLSVersion,
                                                     delivered: bool) -> None:
    cert_file, key_file = cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    server_ctx.maximum_version = server_max
    with OtlpHttpSink(tls=server_ctx) as sink:
        config = OtlpHttpExporterConfig(endpoint=f"https://127.0.0.1:{sink.port}", timeout=1,
                                        tls={"ca_file": str(cert_file), "min_version": "1.3"},
                                        retry_on_failure={**FAST_RETRY, "max_elapsed_time": 0.3})
        deliver(build_exporter("otlp_http", config, Telemetry()))
        assert (len(sink.spans()) == 2) is delivered


def test_grpc_min_version_13_is_refused_saying_why() -> None:
    with pytest.raises(ValueError, match="grpcio cannot require TLS 1.3"):
        OtlpExporterConfig(endpoint="backend:4317", tls={"min_version": 1.3})
    assert OtlpExporterConfig(endpoint="backend:4317", tls={"min_version": 1.2}).tls.min_version == "1.2"
