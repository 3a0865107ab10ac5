"""Both OTLP exporters over TLS (and gRPC with a client certificate), with a throwaway cert."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

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
