"""processor.receivers.config through the whole config: TLS, auth and timeout keys of both
protocols, with errors naming their key path."""

from __future__ import annotations

import pytest

from processor.config import parse_config
from processor.confmap import ConfigError


def doc(grpc: dict | None = None, http: dict | None = None) -> dict:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:4317", **(grpc or {})},
                                             "http": {"endpoint": "127.0.0.1:4318", **(http or {})}}}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
    }


def problems(d: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(d, "<test>")
    return err.value.problems


@pytest.fixture
def pem(tmp_path):
    """Files that exist (their contents are only read at start)."""
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    return tmp_path


def test_tls_keys_and_their_defaults(pem):
    tls = {"cert_file": str(pem / "cert.pem"), "key_file": str(pem / "key.pem"),
           "client_ca_file": str(pem / "ca.pem")}
    protocols = parse_config(doc(grpc={"tls": tls}, http={"tls": {**tls, "min_version": 1.3}}),
                             "<test>").receivers["otlp"].protocols
    assert protocols.grpc.tls.min_version == "1.2"  # the collector's default
    assert protocols.http.tls.min_version == "1.3"  # YAML's number 1.3 is the version "1.3"
    assert protocols.http.tls.client_ca_file == str(pem / "ca.pem")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tls_problems_name_the_key(pem, protocol):
    where = f"receivers.otlp.protocols.{protocol}.tls"
    cert, key = str(pem / "cert.pem"), str(pem / "key.pem")
    cases = [
        ({"cert_file": cert}, f"{where}: cert_file and key_file are both required to serve TLS"),
        ({}, f"{where}: cert_file and key_file are both required to serve TLS"),
        ({"cert_file": cert, "key_file": str(pem / "nope.pem")}, f"{where}.key_file: no such file: {pem / 'nope.pem'}"),
        ({"cert_file": str(pem), "key_file": key}, f"{where}.cert_file: not a file: {pem}"),
        ({"cert_file": cert, "key_file": key, "client_ca_file": str(pem / "x")},
         f"{where}.client_ca_file: no such file: {pem / 'x'}"),
        ({"cert_file": cert, "key_file": key, "min_version": "1.1"},
         f"{where}.min_version: Input should be '1.2' or '1.3'"),
        ({"cert_file": cert, "key_file": key, "ca_fil": cert}, f"{where}.ca_fil: unknown key"),
    ]
    for tls, message in cases:
        assert problems(doc(**{protocol: {"tls": tls}})) == [message], tls


def test_grpc_cannot_require_tls_13(pem):
    tls = {"cert_file": str(pem / "cert.pem"), "key_file": str(pem / "key.pem"), "min_version": "1.3"}
    [message] = problems(doc(grpc={"tls": tls}))
    assert message.startswith("receivers.otlp.protocols.grpc: tls.min_version: grpcio cannot require TLS 1.3")


def test_http_timeouts():
    http = parse_config(doc(), "<test>").receivers["otlp"].protocols.http
    assert (http.read_timeout, http.read_header_timeout, http.idle_timeout) == (60.0, 60.0, 60.0)
    http = parse_config(doc(http={"read_timeout": "0s", "read_header_timeout": "5s", "idle_timeout": "2m"}),
                        "<test>").receivers["otlp"].protocols.http
    assert (http.read_timeout, http.read_header_timeout, http.idle_timeout) == (0.0, 5.0, 120.0)
    assert problems(doc(http={"idle_timeout": 0})) == [
        "receivers.otlp.protocols.http.idle_timeout: Input should be greater than 0"]
    assert problems(doc(grpc={"read_timeout": "1s"})) == ["receivers.otlp.protocols.grpc.read_timeout: unknown key"]


def test_auth_needs_an_authenticator():
    assert problems(doc(http={"auth": {}})) == ["receivers.otlp.protocols.http.auth.authenticator: Field required"]
    assert problems(doc(http={"auth": {"authenticator": "bearertokenauth"}})) == [
        "receivers.otlp.protocols.http.auth.authenticator: 'bearertokenauth' is not an enabled extension "
        "(service.extensions: [])"]


KEEPALIVE = {"server_parameters": {"max_connection_idle": "11s", "max_connection_age": "30s",
                                   "max_connection_age_grace": "5s", "time": "10s", "timeout": "2s"},
             "enforcement_policy": {"min_time": "5s", "permit_without_stream": True}}


def test_grpc_keepalive_maps_to_grpcio_channel_arguments():
    from processor.receivers.config import grpc_server_options

    grpc = parse_config(doc(grpc={"keepalive": KEEPALIVE}), "<test>").receivers["otlp"].protocols.grpc
    options = dict(grpc_server_options(grpc))
    assert options["grpc.max_connection_idle_ms"] == 11_000
    assert options["grpc.max_connection_age_ms"] == 30_000
    assert options["grpc.max_connection_age_grace_ms"] == 5_000
    assert options["grpc.keepalive_time_ms"] == 10_000
    assert options["grpc.keepalive_timeout_ms"] == 2_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 5_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    plain = dict(grpc_server_options(parse_config(doc(), "<test>").receivers["otlp"].protocols.grpc))
    assert not any("keepalive" in k or "connection" in k for k in plain)  # grpcio's defaults


def test_a_grpc_server_with_keepalive_serves():
    from tests.support.harness import config_dict, grpc_export, simple_request, start_pipeline

    running = start_pipeline(config_dict({"debug": {}}, grpc={"keepalive": KEEPALIVE, "include_metadata": True}))
    try:
        assert grpc_export(running.grpc_target, simple_request(1)).ByteSize() == 0
    finally:
        running.stop()


def test_include_metadata_is_accepted_on_both_protocols():
    protocols = parse_config(doc(grpc={"include_metadata": True}, http={"include_metadata": True}),
                             "<test>").receivers["otlp"].protocols
    assert protocols.grpc.include_metadata and protocols.http.include_metadata
