"""No secret leaves faulttrace: a pipeline with a bearer token and a TLS key serves authorized
and unauthorized requests on both protocols, and neither the token nor the key appears in any
log record (every logger, DEBUG and up), in /metrics, in an error response, in the config's repr
or on the process's stdout/stderr (grpcio's C core writes there)."""

from __future__ import annotations

import logging
import secrets

import grpc
import pytest
import requests
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.support.certs import make_pki
from tests.support.harness import EXPORT_METHOD, config_dict, grpc_exporter, simple_request, start_pipeline
from tests.support.otlp_sink import OtlpGrpcSink
from tests.support.sdk import export, make_spans, wait_arrived
from tests.support.sdk import grpc_exporter as sdk_grpc
from tests.support.sdk import http_exporter as sdk_http

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests would let these override the SDK HTTP exporter's certificate_file (psf/requests#3829).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def test_neither_the_token_nor_the_key_leaks(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    token = "ft-" + secrets.token_hex(16)
    pki = make_pki(tmp_path)
    key_lines = [line for line in pki.server_key.read_text().splitlines() if line and not line.startswith("-----")]
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    auth = {"authenticator": "bearertokenauth"}
    with OtlpGrpcSink() as sink:
        config = config_dict({"otlp_grpc": grpc_exporter(sink.port)},
                             grpc={"tls": tls, "auth": auth}, http={"tls": tls, "auth": auth})
        config["extensions"] = {"bearertokenauth": {"token": token}}
        config["service"]["extensions"] = ["bearertokenauth"]
        running = start_pipeline(config)
        try:
            grpc_port, http_port = running.ports["otlp/grpc"], running.ports["otlp/http"]
            good = {"authorization": f"Bearer {token}"}
            for exporter in (sdk_grpc(grpc_port, ca=pki.ca, headers=good), sdk_http(http_port, ca=pki.ca, headers=good)):
                spans = make_spans("authorized")
                assert export(exporter, spans) is SpanExportResult.SUCCESS
                wait_arrived(sink, spans)

            # Wrong values that contain the token: an echo of the request would show it.
            bad = [None, "Bearer nope", f"Bearer {token}x", f"Basic {token}", token, f"Bearer  {token[:-1]}"]
            replies: list[str | bytes] = []
            credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
            with grpc.secure_channel(f"127.0.0.1:{grpc_port}", credentials) as channel:
                call = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
                for value in bad:
                    with pytest.raises(grpc.RpcError) as err:
                        call(simple_request(800).SerializeToString(), timeout=5,
                             metadata=(("authorization", value),) if value else None)
                    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
                    replies += [err.value.details() or "", repr(err.value.trailing_metadata())]
            for value in bad:
                for content_type in ("application/x-protobuf", "application/json"):
                    headers = {"Content-Type": content_type, **({"Authorization": value} if value else {})}
                    reply = requests.post(f"https://127.0.0.1:{http_port}/v1/traces", headers=headers,
                                          data=simple_request(801).SerializeToString(), verify=str(pki.ca),
                                          timeout=5)
                    assert reply.status_code == 401
                    replies += [reply.content, repr(dict(reply.headers))]
            metrics = requests.get(f"{running.metrics_url}/metrics", timeout=5).text
            assert 'code="UNAUTHENTICATED"' in metrics and 'code="401"' in metrics
            config_repr = repr(running.pipeline.config)
        finally:
            running.stop()

    logged = [f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert any("bearertokenauth" in line for line in logged)  # the capture did see the pipeline's logs
    output = capfd.readouterr()
    for secret in [token, *key_lines]:
        assert not [line for line in logged if secret in line]
        assert secret not in metrics
        assert not [r for r in replies if secret.encode() in (r if isinstance(r, bytes) else r.encode())]
        assert secret not in config_repr
        assert secret not in output.out and secret not in output.err
