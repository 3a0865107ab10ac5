"""Bearer-token authentication on both receivers (``auth: {authenticator: bearertokenauth}``):
the real opentelemetry-sdk exporters with the token deliver; without it, with another token or
scheme, a call gets gRPC UNAUTHENTICATED / HTTP 401 that says nothing about the token, is
counted by status, and nothing reaches the sink."""

from __future__ import annotations

import grpc
import pytest
import requests
from google.rpc import code_pb2, status_pb2
from opentelemetry.sdk.trace.export import SpanExportResult

from processor.pipeline import StartError
from tests.support.harness import EXPORT_METHOD, config_dict, grpc_exporter, simple_request, start_pipeline
from tests.support.otlp_sink import OtlpGrpcSink
from tests.support.sdk import arrived_any, export, make_spans, wait_arrived
from tests.support.sdk import grpc_exporter as sdk_grpc
from tests.support.sdk import http_exporter as sdk_http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # real servers and clients

TOKEN = "s3cr3t-t0ken-for-tests"
AUTH = {"auth": {"authenticator": "bearertokenauth/agents"}}


def auth_config(sink: OtlpGrpcSink, extension: dict) -> dict:
    config = config_dict({"otlp_grpc": grpc_exporter(sink.port)}, grpc=AUTH, http=AUTH)
    config["extensions"] = {"bearertokenauth/agents": extension}
    config["service"]["extensions"] = ["bearertokenauth/agents"]
    return config


@pytest.fixture(scope="module")
def sink():
    with OtlpGrpcSink() as s:
        yield s


@pytest.fixture(scope="module")
def running(sink):
    p = start_pipeline(auth_config(sink, {"token": TOKEN}))
    yield p
    p.stop()


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize("value", [f"Bearer {TOKEN}", f"bearer {TOKEN}"], ids=["Bearer", "bearer"])
def test_the_sdk_exporter_with_the_token_delivers(running, sink, transport, value):
    spans = make_spans(f"auth-{transport}")
    exporter = (sdk_grpc(running.ports["otlp/grpc"], headers={"authorization": value}) if transport == "grpc"
                else sdk_http(running.ports["otlp/http"], headers={"Authorization": value}))
    assert export(exporter, spans) is SpanExportResult.SUCCESS
    wait_arrived(sink, spans)


REFUSED = {
    "missing": None,
    "another token": "Bearer not-the-token",
    "the token as a prefix": f"Bearer {TOKEN}x",
    "a prefix of the token": f"Bearer {TOKEN[:-1]}",
    "another scheme": f"Basic {TOKEN}",
    "no scheme": TOKEN,
}


@pytest.mark.parametrize("value", list(REFUSED.values()), ids=list(REFUSED))
def test_grpc_refuses_without_the_token(running, value):
    before = running.metric("faulttrace_receiver_requests_total", receiver="otlp", transport="grpc",
                            code="UNAUTHENTICATED")
    with grpc.insecure_channel(running.grpc_target) as channel:
        call = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(simple_request(700).SerializeToString(), timeout=5,
                 metadata=(("authorization", value),) if value else None)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "missing or invalid authorization"
    assert running.metric("faulttrace_receiver_requests_total", receiver="otlp", transport="grpc",
                          code="UNAUTHENTICATED") == before + 1


@pytest.mark.parametrize("value", list(REFUSED.values()), ids=list(REFUSED))
def test_http_refuses_without_the_token(running, value):
    before = running.metric("faulttrace_receiver_requests_total", receiver="otlp", transport="http", code="401")
    headers = {"Content-Type": "application/x-protobuf", **({"Authorization": value} if value else {})}
    reply = requests.post(running.http_url, data=simple_request(701).SerializeToString(), headers=headers,
                          timeout=5)
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    body = status_pb2.Status.FromString(reply.content)
    assert (body.code, body.message) == (code_pb2.UNAUTHENTICATED, "missing or invalid authorization")
    assert running.metric("faulttrace_receiver_requests_total", receiver="otlp", transport="http",
                          code="401") == before + 1


def test_http_checks_the_token_before_anything_else(running):
    """An unauthenticated client learns nothing: not the method, media type or body limit."""
    for method, headers in (("GET", {}), ("POST", {"Content-Type": "text/plain"})):
        reply = requests.request(method, running.http_url, data=b"x" * 1000, headers=headers, timeout=5)
        assert reply.status_code == 401


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_sdk_exporter_without_the_token_fails_and_nothing_arrives(running, sink, transport):
    spans = make_spans(f"no-token-{transport}")
    accepted = running.metric("faulttrace_receiver_accepted_spans_total", receiver="otlp", transport=transport)
    exporter = (sdk_grpc(running.ports["otlp/grpc"], headers={"authorization": "Bearer wrong"})
                if transport == "grpc" else sdk_http(running.ports["otlp/http"]))
    assert export(exporter, spans) is SpanExportResult.FAILURE
    assert running.metric("faulttrace_receiver_accepted_spans_total", receiver="otlp",
                          transport=transport) == accepted  # nothing entered the store
    assert not arrived_any(sink, spans)


def test_a_token_file_is_read_at_start(sink, tmp_path):
    path = tmp_path / "tokens"
    path.write_text("\nfirst-token\n  second-token  \n", encoding="utf-8")
    running = start_pipeline(auth_config(sink, {"filename": str(path)}))
    try:
        for token in ("first-token", "second-token"):
            spans = make_spans(f"file-{token}")
            exporter = sdk_http(running.ports["otlp/http"], headers={"Authorization": f"Bearer {token}"})
            assert export(exporter, spans) is SpanExportResult.SUCCESS
            wait_arrived(sink, spans)
    finally:
        running.stop()


def test_a_missing_token_file_fails_the_start_naming_the_key(sink, tmp_path):
    with pytest.raises(StartError) as err:
        start_pipeline(auth_config(sink, {"filename": str(tmp_path / "nope")}))
    assert str(err.value) == (f"extensions.bearertokenauth/agents.filename: cannot read {tmp_path / 'nope'}: "
                              "No such file or directory")
