"""The health_check extension: a real pipeline's readiness on its own endpoint, as the collector's."""

from __future__ import annotations

import pytest
import requests

from processor.config import parse_config
from processor.confmap import ConfigError
from tests.support.harness import config_dict, start_pipeline

pytestmark = pytest.mark.timeout(60)


def _config(health_check: dict) -> dict:
    config = config_dict({"debug": {}})
    config["extensions"] = {"health_check": {"endpoint": "127.0.0.1:0", **health_check}}
    config["service"]["extensions"] = ["health_check"]
    return config


def test_ready_once_started_and_not_from_the_moment_it_stops():
    running = start_pipeline(_config({"path": "/health/status"}))
    url = f"http://127.0.0.1:{running.ports['health_check']}/health/status"
    try:
        reply = requests.get(url, timeout=5)
        assert reply.status_code == 200 and reply.json()["status"] == "Server available"
        assert requests.get(f"http://127.0.0.1:{running.ports['health_check']}/", timeout=5).status_code == 404
        running.pipeline.extensions["health_check"].set_ready(False)  # what stop() does first
        reply = requests.get(url, timeout=5)
        assert reply.status_code == 503 and reply.json()["status"] == "Server not available"
    finally:
        running.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)


def test_response_bodies_replace_the_json_status():
    running = start_pipeline(_config({"response_body": {"healthy": "up", "unhealthy": "down"}}))
    try:
        reply = requests.get(f"http://127.0.0.1:{running.ports['health_check']}/", timeout=5)
        assert (reply.status_code, reply.text) == (200, "up")
    finally:
        running.stop()


def test_the_collectors_defaults_and_checks():
    config = parse_config({**_config({}), "extensions": {"health_check": None}}, "<test>")
    assert config.extensions["health_check"].endpoint == "127.0.0.1:13133"
    assert config.extensions["health_check"].path == "/"
    with pytest.raises(ConfigError) as err:
        parse_config(_config({"path": "health", "check_collector_pipeline": {"enabled": True}}), "<test>")
    assert err.value.problems == [
        "extensions.health_check.path: Value error, 'health' must start with /".replace("Value error, ", ""),
        "extensions.health_check.check_collector_pipeline: supported by the collector, not by faulttrace: the "
        "collector deprecated it; readiness covers the whole pipeline; remove it"]
