"""Layer inference: the evidence and the span's conventions give a candidate its layer."""

from __future__ import annotations

import pytest

from processor.localizer.conventions import is_setting, layer


@pytest.mark.parametrize(("kw", "expected"), [
    # a database client span
    ({"keys": {"db.system", "db.statement"}, "error": False, "exception": False, "slow": True}, "data"),
    # a slowdown shared by co-located pods
    ({"keys": set(), "error": False, "exception": False, "slow": True, "shared": ["k8s.node.name"]},
     "infrastructure"),
    # a refused connection, DNS, a restart: even on a database span
    ({"keys": {"db.system"}, "error": True, "exception": True, "slow": False,
      "detail": "OperationalError: connection refused"}, "infrastructure"),
    ({"keys": {"http.request.method"}, "error": True, "exception": True, "slow": False,
      "detail": "socket.gaierror: [Errno -2] Name or service not known"}, "infrastructure"),
    ({"keys": {"gen_ai.operation.name"}, "error": True, "exception": False, "slow": False,
      "numbers": {"http.response.status_code": 429.0}}, "infrastructure"),
    # an exception raised in the span's own code
    ({"keys": {"code.function"}, "error": True, "exception": True, "slow": False,
      "detail": "KeyError: 'currency'"}, "code"),
    # a generative-AI span
    ({"keys": {"gen_ai.operation.name", "gen_ai.response.finish_reasons"}, "error": False, "exception": False,
      "slow": False, "silent": True, "abnormal_keys": ["gen_ai.response.finish_reasons"]}, "semantic"),
    # a setting that differs from the baseline
    ({"keys": {"gen_ai.operation.name", "gen_ai.request.temperature"}, "error": False, "exception": False,
      "slow": False, "silent": True, "abnormal_keys": ["gen_ai.request.temperature"]}, "config"),
    ({"keys": {"http.request.method"}, "error": True, "exception": True, "slow": False,
      "abnormal_keys": ["feature_flag.variant"]}, "config"),
    ({"keys": set(), "error": True, "exception": False, "slow": False, "shared": ["service.version"]}, "config"),
    # slowness nothing else accounts for
    ({"keys": set(), "error": False, "exception": False, "slow": True}, "infrastructure"),
])
def test_layer(kw: dict, expected: str) -> None:
    got, reason = layer(**kw)
    assert got == expected
    assert reason


@pytest.mark.parametrize(("key", "setting"), [
    ("service.version", True), ("feature_flag.variant", True), ("gen_ai.request.temperature", True),
    ("gen_ai.request.top_p", True), ("http.client.timeout_ms", True), ("app.request_timeout", True),
    ("db.rows", False), ("gen_ai.response.finish_reasons", False), ("gen_ai.tool.name", False),
])
def test_settings(key: str, setting: bool) -> None:
    assert is_setting(key) is setting
