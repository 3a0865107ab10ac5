"""Both receivers over TLS and mTLS, as a collector user configures them
(``receivers.otlp.protocols.{grpc,http}.tls``), with certificates made at test time and the
real opentelemetry-sdk OTLP exporters as clients; what the sink behind the pipeline receives
is the evidence."""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import grpc
import pytest
import requests
from opentelemetry.sdk.trace.export import SpanExportResult

from processor.pipeline import StartError
from tests.support.certs import Pki, make_pki
from tests.support.harness import EXPORT_METHOD, config_dict, grpc_exporter, simple_request, start_pipeline
from tests.support.otlp_sink import OtlpGrpcSink
from tests.support.sdk import arrived_any, export, make_spans, wait_arrived
from tests.support.sdk import grpc_exporter as sdk_grpc
from tests.support.sdk import http_exporter as sdk_http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # real servers and clients


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's CA file (psf/requests#3829),
    which would hide the SDK HTTP exporter's certificate_file."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sink():
    with OtlpGrpcSink() as s:
        yield s


def tls_config(sink: OtlpGrpcSink, tls: dict, http_tls: dict | None = None) -> dict:
    return config_dict({"otlp_grpc": grpc_exporter(sink.port)}, grpc={"tls": tls}, http={"tls": http_tls or tls})


@pytest.fixture(scope="module")
def tls(pki, sink):
    running = start_pipeline(tls_config(sink, {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mtls(pki, sink):
    running = start_pipeline(tls_config(sink, {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                                               "client_ca_file": str(pki.ca)}))
    yield running
    running.stop()


def ports(running) -> tuple[int, int]:
    return running.ports["otlp/grpc"], running.ports["otlp/http"]


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_sdk_exporter_delivers_over_tls(tls, sink, pki, transport):
    spans = make_spans(f"tls-{transport}")
    grpc_port, http_port = ports(tls)
    exporter = sdk_grpc(grpc_port, ca=pki.ca) if transport == "grpc" else sdk_http(http_port, ca=pki.ca)
    assert export(exporter, spans) is SpanExportResult.SUCCESS
    wait_arrived(sink, spans)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_sdk_exporter_with_a_client_certificate_delivers_over_mtls(mtls, sink, pki, transport):
    spans = make_spans(f"mtls-{transport}")
    grpc_port, http_port = ports(mtls)
    client = (pki.client_cert, pki.client_key)
    exporter = (sdk_grpc(grpc_port, ca=pki.ca, client=client) if transport == "grpc"
                else sdk_http(http_port, ca=pki.ca, client=client))
    assert export(exporter, spans) is SpanExportResult.SUCCESS
    wait_arrived(sink, spans)


def grpc_call(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """One Export call; its status code."""
    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        call = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
        try:
            call(simple_request(900).SerializeToString(), timeout=5)
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_mtls_refuses_clients_without_a_certificate_its_ca_signed(mtls, sink, pki, who, caplog):
    caplog.set_level(logging.WARNING)
    client = None if who == "no certificate" else (pki.rogue_cert, pki.rogue_key)
    grpc_port, http_port = ports(mtls)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(), private_key=client[1].read_bytes() if client else None,
        certificate_chain=client[0].read_bytes() if client else None)
    assert grpc_call(grpc_port, credentials) is grpc.StatusCode.UNAVAILABLE  # the handshake fails
    # TLS 1.3: the client may finish its side of the handshake before the server refuses it, so the
    # refusal is an SSLError or a closed connection; both are ConnectionErrors.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"https://127.0.0.1:{http_port}/v1/traces", data=simple_request(901).SerializeToString(),
                      headers={"Content-Type": "application/x-protobuf"}, verify=str(pki.ca),
                      cert=(str(client[0]), str(client[1])) if client else None, timeout=5)
    spans = make_spans(f"refused-{who}")
    exporter = sdk_grpc(grpc_port, ca=pki.ca, client=client, timeout=2)
    assert export(exporter, spans) is SpanExportResult.FAILURE
    assert not arrived_any(sink, spans)
    # A refused handshake is the client's problem, not an error of faulttrace's.
    assert [r for r in caplog.records if r.name.startswith(("processor", "aiohttp", "asyncio"))] == []


def test_a_plaintext_client_gets_nothing_from_a_tls_port(tls):
    grpc_port, http_port = ports(tls)
    assert grpc_call(grpc_port, None) is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"http://127.0.0.1:{http_port}/v1/traces", data=b"", timeout=5)


def handshake(port: int, ca: Path, version: ssl.TLSVersion) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        return str(conn.version())


def test_min_version_13_refuses_tls_12(pki, sink):
    server = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    running = start_pipeline(tls_config(sink, server, {**server, "min_version": "1.3"}))
    try:
        _, http_port = ports(running)
        assert handshake(http_port, pki.ca, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            handshake(http_port, pki.ca, ssl.TLSVersion.TLSv1_2)
    finally:
        running.stop()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_the_default_minimum_is_tls_12_on_both_protocols(tls, pki):
    """TLS 1.1 is refused (grpcio's fixed floor, ``min_version: "1.2"`` for HTTP); 1.2 is served."""
    for port in ports(tls):
        assert handshake(port, pki.ca, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_key_that_does_not_match_the_certificate_fails_the_start_naming_the_key(pki, sink, transport):
    good = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    bad = {"cert_file": str(pki.server_cert), "key_file": str(pki.client_key)}
    config = tls_config(sink, bad if transport == "grpc" else good, bad if transport == "http" else good)
    with pytest.raises(StartError) as err:
        start_pipeline(config)
    assert str(err.value) == (f"receivers.otlp.protocols.{transport}.tls: cannot load cert_file "
                              f"{pki.server_cert} with key_file {pki.client_key}: KEY_VALUES_MISMATCH")
