"""processor.config: the issue's YAML, defaults, key-path errors, ${env:VAR}."""

from __future__ import annotations

import textwrap

import pytest

from processor.config import DEFAULT_CONFIG, load_config, parse_config
from processor.confmap import ConfigError, expand_env, parse_duration
from processor.exporters.config import DebugExporterConfig, FileExporterConfig, OtlpExporterConfig

ISSUE_YAML = """\
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:4317}
      http: {endpoint: 127.0.0.1:4318}
processors:
  faulttrace:
    decision_wait: 2s
exporters:
  otlp_grpc:
    endpoint: 127.0.0.1:14317
    tls: {insecure: true}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [faulttrace], exporters: [otlp_grpc]}
"""


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    return err.value.problems


@pytest.mark.parametrize("exporter", ["otlp_grpc", "otlp"])
def test_the_issues_yaml_works(tmp_path, exporter):
    config = load_config(write(tmp_path, ISSUE_YAML.replace("otlp_grpc", exporter)))
    receiver = config.pipeline_receivers()["otlp"]
    assert receiver.protocols.grpc.endpoint == "127.0.0.1:4317"
    assert receiver.protocols.grpc.max_recv_msg_size_mib == 4
    assert receiver.protocols.http.endpoint == "127.0.0.1:4318"
    assert receiver.protocols.http.max_request_body_size == 20 * 1024 * 1024
    assert config.processor.decision_wait == 2.0
    exp = config.pipeline_exporters()[exporter]
    assert isinstance(exp, OtlpExporterConfig)
    assert exp.endpoint == "127.0.0.1:14317" and exp.tls.insecure is True
    assert exp.compression == "gzip"
    assert config.processor.storage.path.endswith("/faulttrace/journal.duckdb")  # journaled by default


def test_no_file_means_defaults():
    config = load_config(None)
    protocols = config.pipeline_receivers()["otlp"].protocols
    assert protocols.grpc.endpoint == "127.0.0.1:4317" and protocols.http.endpoint == "127.0.0.1:4318"
    assert config.processor.decision_wait == 5.0
    assert [type(e) for e in config.pipeline_exporters().values()] == [DebugExporterConfig]
    assert config.service.telemetry.metrics.address == "127.0.0.1:8888"


def test_the_journal_defaults_to_the_users_state_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    storage = load_config(None).processor.storage
    assert storage.path == str(tmp_path / "state" / "faulttrace" / "journal.duckdb") == storage.journal
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = str(tmp_path / "home" / ".local" / "state" / "faulttrace" / "journal.duckdb")
    assert load_config(None).processor.storage.path == expected
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # not absolute: ignored, as the XDG spec says
    assert load_config(None).processor.storage.path == expected


@pytest.mark.parametrize(("path", "journal"), [(":memory:", None), ("/var/lib/ft/j.duckdb", "/var/lib/ft/j.duckdb"),
                                               (None, "default")])
def test_storage_path_memory_a_file_or_null_for_the_default(monkeypatch, tmp_path, path, journal):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    storage = parse_config({**DEFAULT_CONFIG, "processors": {"faulttrace": {"storage": {"path": path}}}}).processor.storage
    default = str(tmp_path / "faulttrace" / "journal.duckdb")
    assert storage.journal == (default if journal == "default" else journal)


def test_an_empty_storage_path_is_an_error():
    with pytest.raises(ConfigError, match=r"processors\.faulttrace\.storage\.path: empty: .*':memory:'"):
        parse_config({**DEFAULT_CONFIG, "processors": {"faulttrace": {"storage": {"path": " "}}}})


def test_empty_protocol_means_its_defaults(tmp_path):
    config = load_config(write(tmp_path, ISSUE_YAML.replace("grpc: {endpoint: 127.0.0.1:4317}", "grpc:")))
    assert config.pipeline_receivers()["otlp"].protocols.grpc.endpoint == "127.0.0.1:4317"


def test_unknown_key_is_named_by_its_path(tmp_path):
    found = problems(tmp_path, ISSUE_YAML.replace("insecure: true", "insecur: true"))
    assert found == ["exporters.otlp_grpc.tls.insecur: unknown key"]


def test_every_problem_is_reported_with_its_path(tmp_path):
    text = ISSUE_YAML.replace("decision_wait: 2s", "decision_wait: soon\n    max_traces: -1") \
        .replace("grpc: {endpoint: 127.0.0.1:4317}", "grpc: {endpoint: nohost, max_recv_msg_size_mib: 0}")
    found = problems(tmp_path, text)
    assert any(p.startswith("processors.faulttrace.decision_wait: invalid duration 'soon'") for p in found)
    assert any(p.startswith("processors.faulttrace.max_traces:") for p in found)
    assert any(p.startswith("receivers.otlp.protocols.grpc.endpoint:") and "host:port" in p for p in found)
    assert any(p.startswith("receivers.otlp.protocols.grpc.max_recv_msg_size_mib:") for p in found)
    assert len(found) == 4


def test_unknown_component_type(tmp_path):
    found = problems(tmp_path, ISSUE_YAML.replace("  otlp_grpc:\n", "  otlp_grcp:\n").replace(
        "exporters: [otlp_grpc]", "exporters: [otlp_grcp]"))
    assert len(found) == 1
    assert found[0].startswith("exporters.otlp_grcp: unknown type 'otlp_grcp' (known: ")
    assert "otlp_grpc" in found[0] and "otlphttp" in found[0]


def test_named_components_use_their_type(tmp_path):
    text = ISSUE_YAML.replace("  otlp_grpc:\n", "  otlp/backend:\n").replace(
        "exporters: [otlp_grpc]", "exporters: [otlp/backend, file/audit]").replace(
        "service:", "  file/audit: {path: /tmp/out.jsonl}\nservice:")
    config = load_config(write(tmp_path, text))
    exporters = config.pipeline_exporters()
    assert isinstance(exporters["otlp/backend"], OtlpExporterConfig)
    assert isinstance(exporters["file/audit"], FileExporterConfig)


def test_pipeline_references_must_be_defined(tmp_path):
    found = problems(tmp_path, ISSUE_YAML.replace("exporters: [otlp_grpc]", "exporters: [otlp_grpc, debug]"))
    assert found == ["service.pipelines.traces.exporters: 'debug' is not defined under exporters"]


def test_missing_required_keys(tmp_path):
    found = problems(tmp_path, ISSUE_YAML.replace("    endpoint: 127.0.0.1:14317\n", ""))
    assert found == ["exporters.otlp_grpc.endpoint: Field required"]


def test_only_traces_pipelines(tmp_path):
    found = problems(tmp_path, ISSUE_YAML.replace("    traces:", "    metrics:"))
    assert len(found) == 1 and "traces pipelines only" in found[0] and found[0].startswith("service.pipelines")


def test_env_substitution(tmp_path, monkeypatch):
    monkeypatch.setenv("FT_BACKEND", "collector.internal:4317")
    monkeypatch.setenv("FT_WAIT", "750ms")
    monkeypatch.delenv("FT_UNSET", raising=False)
    text = ISSUE_YAML.replace("127.0.0.1:14317", "${env:FT_BACKEND}").replace("2s", "${FT_WAIT}") \
        .replace("tls: {insecure: true}",
                 "tls: {insecure: true}\n    headers: {x-token: \"${env:FT_UNSET:-fallback}$$\"}")
    config = load_config(write(tmp_path, text))
    exp = config.pipeline_exporters()["otlp_grpc"]
    assert exp.endpoint == "collector.internal:4317"
    assert exp.headers == {"x-token": "fallback$"}
    assert config.processor.decision_wait == 0.75


def test_expand_env_unit():
    env = {"A": "1", "E": ""}
    assert expand_env("${env:A}-${A}-${env:B:-x}-${env:E}-$$", env) == "1-1-x--$"
    with pytest.raises(ValueError, match=r"\$\{env:B\} is not set; .*\$\{env:B:-value\}"):
        expand_env("${env:B}", env)
    with pytest.raises(ValueError, match="'http' config provider is supported by the collector, not by faulttrace"):
        expand_env("${http://example.com/config}", env)


def test_an_unset_variable_is_an_error_naming_the_key_not_an_empty_endpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("FT_UNSET_BACKEND", raising=False)
    text = ISSUE_YAML.replace("127.0.0.1:14317", "${env:FT_UNSET_BACKEND}")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    (problem,) = err.value.problems
    assert problem.startswith("exporters.otlp_grpc.endpoint: ${env:FT_UNSET_BACKEND} is not set"), problem


def test_a_reference_in_a_comment_is_not_expanded(tmp_path, monkeypatch):
    monkeypatch.delenv("FT_UNSET_BACKEND", raising=False)
    load_config(write(tmp_path, "# endpoint: ${env:FT_UNSET_BACKEND}\n" + ISSUE_YAML))


def test_file_references_read_a_mounted_secret(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret\n", encoding="utf-8")
    text = ISSUE_YAML.replace("tls: {insecure: true}",
                              f"tls: {{insecure: true}}\n    headers: {{authorization: \"Bearer ${{file:{secret}}}\"}}")
    exp = load_config(write(tmp_path, text)).pipeline_exporters()["otlp_grpc"]
    assert exp.headers == {"authorization": "Bearer s3cret"}
    missing = text.replace(str(secret), str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"exporters\.otlp_grpc\.headers\.authorization: \$\{file:.*absent\}: cannot read"):
        load_config(write(tmp_path, missing))


@pytest.mark.parametrize("text, seconds", [("5s", 5.0), ("250ms", 0.25), ("1m30s", 90.0), ("1h", 3600.0),
                                           (2, 2.0), (0.5, 0.5), ("100us", 1e-4)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "5 s", "s", "", "-1s", True, None, "1d"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_yaml_syntax_error_names_the_line(tmp_path):
    found = problems(tmp_path, "receivers:\n  otlp: {protocols: [\n")
    assert len(found) == 1 and found[0].startswith("line ")


def test_empty_and_unreadable_files(tmp_path):
    assert problems(tmp_path, "") == ["the file is empty"]
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "missing.yaml")
    assert err.value.problems[0].startswith("cannot read")
    assert "missing.yaml" in str(err.value)


def test_parse_config_rejects_non_mappings():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config(["not", "a", "mapping"])


def test_collector_shorthands_carry_over(tmp_path):
    # ":4317" listens on every interface; integer and boolean header values are text
    text = ISSUE_YAML.replace("{endpoint: 127.0.0.1:4317}", '{endpoint: ":4317"}') \
        .replace("tls: {insecure: true}", "tls: {insecure: true}\n    headers: {x-tenant: 42, x-debug: true}")
    config = load_config(write(tmp_path, text))
    assert config.receivers["otlp"].protocols.grpc.endpoint == "0.0.0.0:4317"
    assert config.pipeline_exporters()["otlp_grpc"].headers == {"x-tenant": "42", "x-debug": "true"}
