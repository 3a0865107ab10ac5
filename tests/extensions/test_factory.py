"""Extensions in the whole config (processor.config with processor.extensions.factory): each body
against its type's model, ``service.extensions`` and receivers' ``auth.authenticator`` must
agree, and the collector's extensions faulttrace lacks get a message saying what to do."""

from __future__ import annotations

import copy

import pytest

from processor.config import parse_config
from processor.confmap import ConfigError

BASE = {
    "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:4317",
                                                  "auth": {"authenticator": "bearertokenauth"}},
                                         "http": {"endpoint": "127.0.0.1:4318"}}}},
    "exporters": {"debug": {}},
    "extensions": {"bearertokenauth": {"token": "a-secret-token"}},
    "service": {"extensions": ["bearertokenauth"],
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
}


def config(**changes: object) -> dict:
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, key = path.split("__")
        node = doc
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    return doc


def problems(doc: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "<test>")
    return err.value.problems


def test_a_valid_configuration():
    cfg = parse_config(config(), "<test>")
    assert cfg.service.extensions == ["bearertokenauth"]
    assert cfg.extensions["bearertokenauth"].scheme == "Bearer"
    assert cfg.pipeline_receivers()["otlp"].authenticators() == {"protocols.grpc.auth.authenticator":
                                                                 "bearertokenauth"}


def test_named_extensions():
    doc = config(extensions={"bearertokenauth/agents": {"filename": "/run/secrets/token", "scheme": "Token"}},
                 service__extensions=["bearertokenauth/agents"])
    doc["receivers"]["otlp"]["protocols"]["grpc"]["auth"]["authenticator"] = "bearertokenauth/agents"
    assert parse_config(doc, "<test>").extensions["bearertokenauth/agents"].scheme == "Token"


@pytest.mark.parametrize("changes, message", [
    ({"extensions": {"bearertokenauth": {"token": "x", "tokn": "y"}}},
     "extensions.bearertokenauth.tokn: unknown key"),
    ({"extensions": {"bearertokenauth": {}}},
     "extensions.bearertokenauth: set token or filename (an empty token, e.g. from an unset environment "
     "variable, is refused)"),
    ({"extensions": {"bearertokenauth": None}},
     "extensions.bearertokenauth: set token or filename (an empty token, e.g. from an unset environment "
     "variable, is refused)"),
    ({"service__extensions": []},
     "extensions.bearertokenauth: defined but not enabled; add it to service.extensions or remove it"),
    ({"service__extensions": ["bearertokenauth", "bearertokenauth/other"]},
     "service.extensions: 'bearertokenauth/other' is not defined under extensions"),
    ({"extensions": {"bearertokenauth": {"token": "x"}, "bearertokenauth/b": {"token": "y"}},
      "service__extensions": ["bearertokenauth/b"]},
     "extensions.bearertokenauth: defined but not enabled; add it to service.extensions or remove it"),
    ({"extensions": {"bearertokenauth/b": {"token": "y"}}, "service__extensions": ["bearertokenauth/b"]},
     "receivers.otlp.protocols.grpc.auth.authenticator: 'bearertokenauth' is not an enabled extension "
     "(service.extensions: [bearertokenauth/b])"),
    ({"extensions": {"sigv4auth": {}}, "service__extensions": ["sigv4auth"]},
     "extensions.sigv4auth: unknown type 'sigv4auth' (known: bearertokenauth, health_check)"),
])
def test_problems_name_the_key(changes, message):
    assert problems(config(**changes)) == [message]


@pytest.mark.parametrize("kind, hint", [
    ("pprof", "py-spy"),
    ("zpages", "/metrics"),
    ("oidc", "bearertokenauth or with client certificates (tls.client_ca_file)"),
])
def test_collector_extensions_faulttrace_lacks_say_what_to_do(kind, hint):
    doc = config(extensions={**BASE["extensions"], kind: {}}, service__extensions=["bearertokenauth", kind])
    [message] = problems(doc)
    assert message.startswith(f"extensions.{kind}: {kind!r} is supported by the collector, not by faulttrace: ")
    assert hint in message and message.endswith("remove it from extensions and service.extensions")


def test_no_error_message_shows_the_token():
    secret = "tok-do-not-print-7c1e"
    for doc in (config(extensions={"bearertokenauth": {"token": secret, "schem": secret}}),
                config(extensions={"bearertokenauth": {"token": secret, "scheme": [secret]}}),
                config(extensions={"bearertokenauth": {"token": secret}}, service__extensions=[])):
        with pytest.raises(ConfigError) as err:
            parse_config(doc, "<test>")
        assert secret not in str(err.value)
