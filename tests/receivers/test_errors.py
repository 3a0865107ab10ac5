"""Every bad input gets its OTLP status, and the receivers keep serving afterwards.

gRPC: INVALID_ARGUMENT (malformed), RESOURCE_EXHAUSTED (over
max_recv_msg_size_mib), UNAVAILABLE with RetryInfo (overload).  HTTP: 400 /
413 / 415 / 405 / 503 + Retry-After, with a google.rpc.Status body in the
request's content type.  Spans with invalid ids are rejected one by one in a
partial-success response while the valid ones of the same request go on.
"""

from __future__ import annotations

import gzip
import itertools
import json

import grpc
import pytest
import requests
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.harness import (
    config_dict,
    grpc_export,
    grpc_exporter,
    otlp_json,
    sid,
    simple_request,
    start_pipeline,
    tid,
    wait_until,
)
from tests.support.otlp_sink import OtlpGrpcSink

pytestmark = pytest.mark.timeout(60)

GRPC_LIMIT_MIB = 1
HTTP_LIMIT = 256 * 1024
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
_traces = itertools.count(1_000)


def fresh(traces: int = 1, spans_per_trace: int = 2) -> ExportTraceServiceRequest:
    """A valid request whose trace ids no other test uses."""
    first = next(_traces)
    for _ in range(traces - 1):
        next(_traces)
    return simple_request(first, traces, spans_per_trace)


@pytest.fixture(scope="module")
def sink():
    with OtlpGrpcSink() as s:
        yield s


@pytest.fixture(scope="module")
def running(sink):
    p = start_pipeline(config_dict({"otlp_grpc": grpc_exporter(sink.port)},
                                   grpc={"max_recv_msg_size_mib": GRPC_LIMIT_MIB},
                                   http={"max_request_body_size": HTTP_LIMIT}))
    yield p
    p.stop()


def assert_serving(running) -> None:
    """A good request on each transport still succeeds."""
    assert grpc_export(running.grpc_target, fresh()) == ExportTraceServiceResponse()
    reply = requests.post(running.http_url, data=fresh().SerializeToString(), headers=PROTOBUF, timeout=10)
    assert reply.status_code == 200
    assert ExportTraceServiceResponse.FromString(reply.content) == ExportTraceServiceResponse()


def http_status_body(reply: requests.Response) -> status_pb2.Status:
    """The google.rpc.Status of an error reply, decoded per its content type."""
    if reply.headers["Content-Type"].startswith("application/json"):
        return json_format.Parse(reply.content, status_pb2.Status())
    assert reply.headers["Content-Type"].startswith("application/x-protobuf")
    return status_pb2.Status.FromString(reply.content)


def retry_delay(status: status_pb2.Status) -> float:
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError(f"no RetryInfo in {status}")


TRUNCATED = b"\x0a\x05abc"  # field 1, length 5, only 3 bytes follow


# --- gRPC ------------------------------------------------------------------------


@pytest.mark.parametrize("body", [TRUNCATED, b"\xff\xff\xff\xff", b"\x0a\x02\x12\x05"], ids=["truncated", "garbage",
                                                                                            "nested"])
def test_grpc_malformed_is_invalid_argument(running, body):
    with pytest.raises(grpc.RpcError) as err:
        grpc_export(running.grpc_target, body)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode" in err.value.details() and "ExportTraceServiceRequest" in err.value.details()
    assert_serving(running)


def test_grpc_oversize_is_resource_exhausted(running):
    big = fresh()
    big.resource_spans[0].scope_spans[0].spans[0].name = "x" * (GRPC_LIMIT_MIB * 1024 * 1024 + 10)
    with pytest.raises(grpc.RpcError) as err:
        grpc_export(running.grpc_target, big)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_serving(running)


def test_grpc_request_just_under_the_limit_is_accepted(running, sink):
    req = fresh()
    req.resource_spans[0].scope_spans[0].spans[0].name = "y" * (GRPC_LIMIT_MIB * 1024 * 1024 - 4096)
    assert grpc_export(running.grpc_target, req, compression=grpc.Compression.Gzip) == ExportTraceServiceResponse()
    wait_until(lambda: any(s.name.startswith("yyy") for s in sink.spans()), what="the large span exported")


# --- HTTP ------------------------------------------------------------------------


@pytest.mark.parametrize("body", [TRUNCATED, b"\xff\xff\xff\xff"], ids=["truncated", "garbage"])
def test_http_malformed_protobuf_is_400_with_status(running, body):
    reply = requests.post(running.http_url, data=body, headers=PROTOBUF, timeout=10)
    assert reply.status_code == 400
    status = http_status_body(reply)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "cannot decode the body as an OTLP ExportTraceServiceRequest" in status.message
    assert_serving(running)


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "invalid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"resourceSpans": "nope"}', "resourceSpans"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "0102030405060708"}]}]}]}',
     "traceId"),
    (b"\xff\xfe", "invalid JSON"),
    (b'{"resourceSpans":' + b"[" * 10_000 + b"]" * 10_000 + b"}", "nested deeper than"),
], ids=["syntax", "array", "wrong-type", "bad-hex-id", "not-utf8", "nested-10000-deep"])
def test_http_malformed_json_is_400_with_json_status(running, body, fragment):
    reply = requests.post(running.http_url, data=body, headers=JSON, timeout=10)
    assert reply.status_code == 400
    assert reply.headers["Content-Type"].startswith("application/json")
    doc = json.loads(reply.content)
    assert doc["code"] == code_pb2.INVALID_ARGUMENT
    assert "OTLP/JSON" in doc["message"] and fragment in doc["message"]
    assert_serving(running)


def test_http_body_over_limit_is_413(running):
    reply = requests.post(running.http_url, data=b"\x00" * (HTTP_LIMIT + 1), headers=PROTOBUF, timeout=10)
    assert reply.status_code == 413
    assert http_status_body(reply).code == code_pb2.RESOURCE_EXHAUSTED
    assert_serving(running)


def test_http_gzip_bomb_is_413(running):
    bomb = gzip.compress(b"\x00" * (64 * HTTP_LIMIT))
    assert len(bomb) < HTTP_LIMIT // 4  # small on the wire, large once inflated
    reply = requests.post(running.http_url, data=bomb, headers={**PROTOBUF, "Content-Encoding": "gzip"},
                          timeout=10)
    assert reply.status_code == 413
    status = http_status_body(reply)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED and "decompressed" in status.message
    assert_serving(running)


def test_http_gzip_body_that_inflates_to_just_under_the_limit_is_accepted(running):
    req = fresh()
    req.resource_spans[0].scope_spans[0].spans[0].name = "z" * (HTTP_LIMIT - 1024)
    body = gzip.compress(req.SerializeToString())
    reply = requests.post(running.http_url, data=body, headers={**PROTOBUF, "Content-Encoding": "gzip"}, timeout=10)
    assert reply.status_code == 200


def test_http_multi_member_gzip_is_read_whole(running, sink):
    # RFC 1952: a gzip body is a series of members; concatenated requests are one (protobuf merges them).
    first, second = fresh(), fresh()
    body = gzip.compress(first.SerializeToString()) + gzip.compress(second.SerializeToString())
    reply = requests.post(running.http_url, data=body, headers={**PROTOBUF, "Content-Encoding": "gzip"}, timeout=10)
    assert reply.status_code == 200
    assert ExportTraceServiceResponse.FromString(reply.content) == ExportTraceServiceResponse()
    both = ExportTraceServiceRequest()
    both.MergeFrom(first)
    both.MergeFrom(second)
    _assert_valid_part_exported(sink, both)


def test_http_gzip_limit_counts_every_member(running):
    half = gzip.compress(b"\x00" * (HTTP_LIMIT // 2 + 1))
    reply = requests.post(running.http_url, data=half + half, headers={**PROTOBUF, "Content-Encoding": "gzip"},
                          timeout=10)
    assert reply.status_code == 413
    assert "decompressed" in http_status_body(reply).message
    assert_serving(running)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/octet-stream", None])
def test_http_unsupported_content_type_is_415(running, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    reply = requests.post(running.http_url, data=fresh().SerializeToString(), headers=headers, timeout=10)
    assert reply.status_code == 415
    assert "Content-Type" in http_status_body(reply).message
    assert_serving(running)


def test_http_unsupported_content_encoding_is_415(running):
    reply = requests.post(running.http_url, data=fresh().SerializeToString(),
                          headers={**PROTOBUF, "Content-Encoding": "br"}, timeout=10)
    assert reply.status_code == 415
    assert "Content-Encoding" in http_status_body(reply).message
    assert_serving(running)


@pytest.mark.parametrize("body", [b"definitely not gzip", gzip.compress(b"x" * 1000)[:-12],
                                  gzip.compress(b"x" * 1000) + b"trailing", b""],
                         ids=["garbage", "truncated", "trailing-garbage", "empty"])
@pytest.mark.parametrize("headers", [PROTOBUF, JSON], ids=["protobuf", "json"])
def test_http_bad_gzip_is_400(running, body, headers):
    reply = requests.post(running.http_url, data=body, headers={**headers, "Content-Encoding": "gzip"}, timeout=10)
    assert reply.status_code == 400
    status = http_status_body(reply)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "gunzip" in status.message or "gzip body is truncated" in status.message
    assert_serving(running)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_http_other_methods_are_405(running, method):
    reply = requests.request(method, running.http_url, timeout=10)
    assert reply.status_code == 405
    assert reply.headers["Allow"] == "POST"
    assert_serving(running)


def test_http_other_paths_are_404(running):
    url = running.http_url.replace("/v1/traces", "/v1/metrics")
    reply = requests.post(url, data=fresh().SerializeToString(), headers=PROTOBUF, timeout=10)
    assert reply.status_code == 404
    assert_serving(running)


# --- parts that are not what they claim: the request is refused whole -------------------


def scope_not_a_scope(name: str) -> bytes:
    """The measured case: a ScopeSpans whose scope bytes are no InstrumentationScope, with a valid span."""
    span = fresh().resource_spans[0].scope_spans[0].spans[0]
    span.name = name
    scope_spans = b"\x0a\x03\xff\xff\xff" + b"\x12" + bytes([span.ByteSize()]) + span.SerializeToString()
    rs = b"\x12" + bytes([len(scope_spans)]) + scope_spans
    return b"\x0a" + bytes([len(rs)]) + rs


def test_a_request_with_a_part_that_is_not_what_it_claims_is_refused_whole(running, sink):
    with pytest.raises(grpc.RpcError) as err:
        grpc_export(running.grpc_target, scope_not_a_scope("never-stored"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "scope_spans[0].scope is not a valid InstrumentationScope" in err.value.details()
    reply = requests.post(running.http_url, data=scope_not_a_scope("never-stored"), headers=PROTOBUF, timeout=10)
    assert reply.status_code == 400
    assert "scope_spans[0].scope is not a valid InstrumentationScope" in http_status_body(reply).message
    after = fresh()
    grpc_export(running.grpc_target, after)
    _assert_valid_part_exported(sink, after)  # released after the refused ones would have been
    assert not [s for s in sink.spans() if s.name == "never-stored"]


# --- invalid ids: partial success ---------------------------------------------------

N_INVALID = 6


def mixed_request() -> tuple[ExportTraceServiceRequest, ExportTraceServiceRequest]:
    """A request with valid spans and one span per kind of invalid id; and its valid part."""
    req = fresh(traces=2, spans_per_trace=2)
    valid = ExportTraceServiceRequest()
    valid.CopyFrom(req)
    spans = req.resource_spans[0].scope_spans[0].spans
    base = next(_traces)
    for trace_id, span_id, parent in [
        (tid(base)[:15], sid(1), b""),          # trace id too short
        (tid(base) + b"\x01", sid(2), b""),     # too long
        (bytes(16), sid(3), b""),               # all-zero trace id
        (tid(base), sid(4)[:7], b""),           # span id too short
        (tid(base), bytes(8), b""),             # all-zero span id
        (tid(base), sid(6), b"\x01\x02\x03"),   # parent of the wrong length
    ]:
        spans.add(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name="invalid")
    return req, valid


def _exported_names_of(sink, request: ExportTraceServiceRequest) -> list:
    wanted = {s.trace_id for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    return [s for s in sink.spans() if s.trace_id in wanted]


def _assert_valid_part_exported(sink, valid: ExportTraceServiceRequest) -> None:
    want = sorted(s.SerializeToString() for rs in valid.resource_spans for ss in rs.scope_spans for s in ss.spans)
    wait_until(lambda: len(_exported_names_of(sink, valid)) >= len(want), what="valid spans exported")
    got = sorted(s.SerializeToString() for s in _exported_names_of(sink, valid))
    assert got == want
    assert not [s for s in sink.spans() if s.name == "invalid"]


def test_grpc_invalid_ids_rejected_individually(running, sink):
    req, valid = mixed_request()
    response = grpc_export(running.grpc_target, req)
    assert response.partial_success.rejected_spans == N_INVALID
    assert "trace_id must be 16 bytes" in response.partial_success.error_message
    _assert_valid_part_exported(sink, valid)
    assert_serving(running)


def test_http_protobuf_invalid_ids_rejected_individually(running, sink):
    req, valid = mixed_request()
    reply = requests.post(running.http_url, data=req.SerializeToString(), headers=PROTOBUF, timeout=10)
    assert reply.status_code == 200
    response = ExportTraceServiceResponse.FromString(reply.content)
    assert response.partial_success.rejected_spans == N_INVALID
    assert "6 span(s) rejected" in response.partial_success.error_message
    _assert_valid_part_exported(sink, valid)


def test_http_json_invalid_ids_rejected_individually(running, sink):
    req, valid = mixed_request()
    doc = otlp_json(req)
    assert len(doc["resourceSpans"][0]["scopeSpans"][0]["spans"][4]["traceId"]) == 30  # 15 bytes, hex
    reply = requests.post(running.http_url, json=doc, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    response = json_format.Parse(reply.content, ExportTraceServiceResponse())
    assert response.partial_success.rejected_spans == N_INVALID
    assert response.partial_success.error_message
    _assert_valid_part_exported(sink, valid)


def test_request_with_only_invalid_spans_is_partial_success_not_an_error(running):
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(trace_id=bytes(16), span_id=sid(1))
    response = grpc_export(running.grpc_target, req)
    assert response.partial_success.rejected_spans == 1
    assert "trace_id is all zeroes" in response.partial_success.error_message


def test_empty_request_is_accepted(running):
    assert grpc_export(running.grpc_target, ExportTraceServiceRequest()) == ExportTraceServiceResponse()
    reply = requests.post(running.http_url, data=b"", headers=PROTOBUF, timeout=10)
    assert reply.status_code == 200


# --- overload ---------------------------------------------------------------------


@pytest.mark.slow  # fills the store to its limit, then waits for it to drain
def test_overload_is_unavailable_with_retry_info_then_recovers():
    with OtlpGrpcSink() as overload_sink:
        # decision_wait: long enough to send the refused requests while the store is full.
        p = start_pipeline(config_dict({"otlp_grpc": grpc_exporter(overload_sink.port)}, decision_wait=1.5,
                                       processor={"max_buffered_spans": 4}))
        try:
            assert grpc_export(p.grpc_target, fresh(traces=2)) == ExportTraceServiceResponse()  # 4 buffered
            with pytest.raises(grpc.RpcError) as err:
                grpc_export(p.grpc_target, fresh())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            details = dict(err.value.trailing_metadata())["grpc-status-details-bin"]
            status = status_pb2.Status.FromString(details)
            assert status.code == code_pb2.UNAVAILABLE
            assert retry_delay(status) == pytest.approx(1.5)  # come back once decision_wait passed

            for headers, encode in ((PROTOBUF, lambda r: r.SerializeToString()),
                                    (JSON, lambda r: json.dumps(otlp_json(r)).encode())):
                reply = requests.post(p.http_url, data=encode(fresh()), headers=headers, timeout=10)
                assert reply.status_code == 503
                assert reply.headers["Retry-After"] == "2"  # whole seconds, rounded up
                body = http_status_body(reply)
                assert body.code == code_pb2.UNAVAILABLE and "capacity" in body.message
                assert retry_delay(body) == pytest.approx(1.5)
            assert p.metric("faulttrace_receiver_refused_spans_total", receiver="otlp", transport="grpc") == 2

            # Once the buffered traces were released, the same request is accepted: a client
            # that retried as told loses nothing.
            overload_sink.wait_for_spans(4)
            wait_until(lambda: p.pipeline.store.buffered_spans == 0, what="store drained")
            retried = fresh()
            assert grpc_export(p.grpc_target, retried) == ExportTraceServiceResponse()
            overload_sink.wait_for_spans(6)
        finally:
            p.stop()


# --- zstd bodies: the same limit and refusals as gzip --------------------------------------


def _zstd(data: bytes) -> bytes:
    import sys

    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
    return zstd.compress(data)


@pytest.mark.parametrize("headers", [PROTOBUF, JSON], ids=["protobuf", "json"])
def test_http_zstd_body_is_accepted_and_exported(running, sink, headers):
    req = fresh()
    data = req.SerializeToString() if headers is PROTOBUF else json.dumps(otlp_json(req)).encode()
    reply = requests.post(running.http_url, data=_zstd(data), headers={**headers, "Content-Encoding": "zstd"},
                          timeout=10)
    assert reply.status_code == 200
    _assert_valid_part_exported(sink, req)


def test_http_multi_frame_zstd_is_read_whole(running, sink):
    first, second = fresh(), fresh()
    body = _zstd(first.SerializeToString()) + _zstd(second.SerializeToString())
    reply = requests.post(running.http_url, data=body, headers={**PROTOBUF, "Content-Encoding": "zstd"}, timeout=10)
    assert reply.status_code == 200
    both = ExportTraceServiceRequest()
    both.MergeFrom(first)
    both.MergeFrom(second)
    _assert_valid_part_exported(sink, both)


def test_http_zstd_bomb_is_413(running):
    bomb = _zstd(b"\x00" * (64 * HTTP_LIMIT))
    assert len(bomb) < 4096  # tiny on the wire, 16 MiB once decompressed
    reply = requests.post(running.http_url, data=bomb, headers={**PROTOBUF, "Content-Encoding": "zstd"}, timeout=10)
    assert reply.status_code == 413
    status = http_status_body(reply)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED and "decompressed" in status.message
    assert_serving(running)


@pytest.mark.parametrize("body", [b"definitely not zstd", _zstd(b"x" * 1000)[:-5], _zstd(b"x" * 1000) + b"trailing",
                                  b""], ids=["garbage", "truncated", "trailing-garbage", "empty"])
def test_http_bad_zstd_is_400(running, body):
    reply = requests.post(running.http_url, data=body, headers={**PROTOBUF, "Content-Encoding": "zstd"}, timeout=10)
    assert reply.status_code == 400
    status = http_status_body(reply)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "zstd" in status.message
    assert_serving(running)
