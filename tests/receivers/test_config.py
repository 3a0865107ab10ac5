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
