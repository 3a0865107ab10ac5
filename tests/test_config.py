"""processor.config: the issue's YAML, defaults, key-path errors, ${env:VAR}."""

from __future__ import annotations

import textwrap
from pathlib import Path

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


# --- collector configs carry over ---------------------------------------------------------

COLLECTOR_YAML = Path(__file__).parent / "data" / "collector.yaml"


def test_a_collector_shaped_config_validates_and_means_what_it_says():
    config = load_config(COLLECTOR_YAML)
    assert config.pipeline.processors == ["memory_limiter", "batch", "faulttrace"]
    cid, limiter = config.pipeline_processor("memory_limiter")
    assert (cid, limiter.check_interval, limiter.limit_percentage) == ("memory_limiter", 1.0, 80)
    assert config.payload_max_spans == 10_000
    grpc = config.receivers["otlp"].protocols.grpc
    assert grpc.endpoint == "0.0.0.0:4317" and grpc.keepalive.server_parameters.max_connection_age == 60.0
    tempo = config.exporters["otlp_grpc/tempo"]
    assert tempo.tls.server_name_override == "tempo.internal" and tempo.sending_queue.storage == "file_storage"
    assert tempo.headers == {"x-scope-orgid": "42"}
    assert config.exporters["otlp_http/jaeger"].compression == "zstd"
    assert config.service.telemetry.metrics.endpoint == "0.0.0.0:8888"
    assert config.service.extensions == ["health_check", "bearertokenauth/agents"]
    assert config.extensions["health_check"].endpoint == "0.0.0.0:13133"


@pytest.mark.parametrize("section, body, message", [
    ("exporters", {"otlp": {"endpoint": "x:4317", "balancer_name": "round_robin"}},
     "exporters.otlp.balancer_name: supported by the collector, not by faulttrace: "),
    ("exporters", {"otlp": {"endpoint": "x:4317", "auth": {"authenticator": "oauth2client"}}},
     "exporters.otlp.auth: supported by the collector, not by faulttrace: send the token as a header"),
    ("exporters", {"otlphttp": {"endpoint": "http://x", "sending_queue": {"batch": {}}}},
     "exporters.otlphttp.sending_queue.batch: supported by the collector, not by faulttrace: "),
    ("receivers", {"otlp": {"protocols": {"http": {"cors": {"allowed_origins": ["*"]}}}}},
     "receivers.otlp.protocols.http.cors: supported by the collector, not by faulttrace: "),
    ("receivers", {"otlp": {"protocols": {"grpc": {"tls": {"reload_interval": "1h"}}}}},
     "receivers.otlp.protocols.grpc.tls.reload_interval: supported by the collector, not by faulttrace: "),
    ("processors", {"memory_limiter": {"check_interval": "1s", "limit_mib": 10, "ballast_size_mib": 5}},
     "processors.memory_limiter.ballast_size_mib: supported by the collector, not by faulttrace: "),
    ("processors", {"batch": {"metadata_keys": ["x-tenant"]}},
     "processors.batch: metadata_keys: supported by the collector, not by faulttrace: "),
    ("processors", {"tail_sampling": {}},
     "processors.tail_sampling: 'tail_sampling' is supported by the collector, not by faulttrace: sample in a "
     "collector after faulttrace"),
    ("receivers", {"jaeger": {}}, "receivers.jaeger: 'jaeger' is supported by the collector, not by faulttrace: "),
    ("exporters", {"logging": {}}, "exporters.logging: 'logging' is supported by the collector, not by "
                                   "faulttrace: the collector renamed it debug"),
])
def test_a_collector_option_faulttrace_lacks_is_named_as_such(section, body, message):
    doc = {"receivers": {"otlp": {}}, "exporters": {"debug": {}},
           "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}}
    doc[section] = {**doc.get(section, {}), **body}
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems
    assert not any("unknown key" in p for p in err.value.problems)


def test_a_typo_is_still_an_unknown_key(tmp_path):
    assert problems(tmp_path, ISSUE_YAML.replace("tls: {insecure: true}", "tls: {insecur: true}")) == [
        "exporters.otlp_grpc.tls.insecur: unknown key"]


def _service(telemetry: dict, processors: dict | None = None) -> dict:
    return {"receivers": {"otlp": {}}, "processors": processors or {}, "exporters": {"debug": {}},
            "service": {"telemetry": telemetry, "pipelines": {"traces": {
                "receivers": ["otlp"], "processors": list(processors or {}), "exporters": ["debug"]}}}}


@pytest.mark.parametrize("metrics, endpoint", [
    ({}, "127.0.0.1:8888"),
    ({"address": "0.0.0.0:9999"}, "0.0.0.0:9999"),
    ({"level": "none"}, None),
    ({"level": "Basic", "readers": [{"pull": {"exporter": {"prometheus": {"host": "::", "port": 9464}}}}]},
     "[::]:9464"),
    ({"readers": [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": 0}}}}]}, "127.0.0.1:0"),
])
def test_service_telemetry_metrics_in_both_of_the_collectors_forms(metrics, endpoint):
    config = parse_config(_service({"metrics": metrics}))
    assert config.service.telemetry.metrics.endpoint == endpoint


@pytest.mark.parametrize("telemetry, message", [
    ({"metrics": {"address": ":8888", "readers": [{"pull": {"exporter": {"prometheus": {"port": 1}}}}]}},
     "service.telemetry.metrics: give readers or address, not both"),
    ({"metrics": {"readers": [{"periodic": {"exporter": {"otlp": {}}}}]}},
     "service.telemetry.metrics.readers.0.periodic: supported by the collector, not by faulttrace: "),
    ({"metrics": {"level": "verbose"}}, "service.telemetry.metrics.level: "),
    ({"logs": {"level": "loud"}}, "service.telemetry.logs.level: "),
    ({"logs": {"encoding": "json"}}, "service.telemetry.logs.encoding: supported by the collector, not by "
                                     "faulttrace: faulttrace logs text lines to stderr"),
    ({"traces": {"processors": []}}, "service.telemetry.traces: supported by the collector, not by faulttrace"),
])
def test_service_telemetry_problems(telemetry, message):
    with pytest.raises(ConfigError) as err:
        parse_config(_service(telemetry))
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_logs_level_as_the_collector_writes_it():
    assert parse_config(_service({"logs": {"level": "WARN"}})).service.telemetry.logs.level == "warn"


def test_a_persistent_queue_needs_the_journal():
    doc = _service({}, {"faulttrace": {"storage": {"path": ":memory:"}}})
    doc["exporters"] = {"otlp": {"endpoint": "x:4317", "sending_queue": {"storage": "file_storage"}}}
    doc["service"]["pipelines"]["traces"]["exporters"] = ["otlp"]
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert err.value.problems[0].startswith("exporters.otlp.sending_queue.storage: a persistent queue is "
                                            "faulttrace's journal")
    doc["processors"]["faulttrace"]["storage"]["path"] = "/tmp/journal.duckdb"
    assert parse_config(doc).exporters["otlp"].sending_queue.storage == "file_storage"


@pytest.mark.parametrize("batch, message", [
    ({"send_batch_size": 100, "send_batch_max_size": 50},
     "send_batch_max_size must be greater than or equal to send_batch_size"),
    ({"timeout": "soon"}, "invalid duration"),
    ({"send_batch_size": -1}, "greater than or equal to 0"),
])
def test_batch_settings_are_checked(batch, message):
    with pytest.raises(ConfigError) as err:
        parse_config(_service({}, {"batch": batch}))
    assert any(p.startswith("processors.batch") and message in p for p in err.value.problems), err.value.problems


def test_a_processor_type_twice_in_the_pipeline_is_refused():
    doc = _service({}, {"memory_limiter": {"check_interval": "1s", "limit_mib": 100},
                        "memory_limiter/2": {"check_interval": "1s", "limit_mib": 200}})
    with pytest.raises(ConfigError, match="memory_limiter appears twice"):
        parse_config(doc)


# --- --set, OTEL_EXPORTER_OTLP_*, port flags ---------------------------------------------


def test_set_like_otelcol(tmp_path):
    config = load_config(write(tmp_path, ISSUE_YAML), [
        "processors.faulttrace.decision_wait=250ms",
        "exporters.otlp_grpc.headers={x-tenant: 42}",          # a mapping merges in
        "exporters.otlp_grpc.tls={ca_file: /etc/ca.pem}",       # ... keeping insecure: true beside it
        "exporters.debug=",                                     # null: the component with its defaults
        "service.pipelines.traces.exporters=[otlp_grpc, debug]",
    ], environ={})
    assert config.processor.decision_wait == 0.25
    exporter = config.exporters["otlp_grpc"]
    assert exporter.headers == {"x-tenant": "42"} and exporter.tls.insecure and exporter.tls.ca_file == "/etc/ca.pem"
    assert config.pipeline.exporters == ["otlp_grpc", "debug"]


def test_set_values_are_expanded_and_checked_like_the_file(tmp_path):
    config = load_config(write(tmp_path, ISSUE_YAML), ["exporters.otlp_grpc.endpoint=${env:BACKEND}"],
                         environ={"BACKEND": "tempo:4317"})
    assert config.exporters["otlp_grpc"].endpoint == "tempo:4317"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, ISSUE_YAML), ["processors.faulttrace.decision_wait=soon", "nokey",
                                                  "exporters.otlp_grpc.endpoint.host=x", "a.b=[unclosed"],
                    environ={})
    assert err.value.problems == [
        "--set nokey: expected key.path=value, e.g. processors.faulttrace.decision_wait=2s",
        "--set exporters.otlp_grpc.endpoint.host: exporters.otlp_grpc.endpoint is not a mapping",
        "--set a.b: the value is not YAML: expected ',' or ']', but got '<stream end>'"]
    with pytest.raises(ConfigError, match="processors.faulttrace.decision_wait: invalid duration"):
        load_config(write(tmp_path, ISSUE_YAML), ["processors.faulttrace.decision_wait=soon"], environ={})


@pytest.mark.parametrize("env, cid, body", [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp_http",
     {"endpoint": "http://collector:4318", "traces_endpoint": None}),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://tempo/otlp/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"},
     "otlp_http", {"endpoint": "https://tempo/otlp/v1/traces", "traces_endpoint": "https://tempo/otlp/v1/traces"}),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp_grpc",
     {"endpoint": "http://collector:4317"}),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme,authorization=Bearer%20t0k",
      "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=other", "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
      "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}, "otlp_grpc",
     {"endpoint": "collector:4317", "headers": {"x-tenant": "other"}, "compression": "none", "timeout": 2.5}),
])
def test_the_sdks_environment_variables_name_the_default_exporter(env, cid, body):
    config = load_config(None, environ=env)
    assert config.pipeline.exporters == [cid] and list(config.exporters) == [cid]
    exporter = config.exporters[cid]
    for key, value in body.items():
        assert getattr(exporter, key) == value
    if cid == "otlp_grpc":
        assert exporter.tls.insecure  # http:// or OTEL_EXPORTER_OTLP_INSECURE=true


def test_otlp_headers_are_percent_decoded_and_grpc_without_scheme_is_tls():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20t0k, x-a = 1 ",
           "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem"}
    exporter = load_config(None, environ=env).exporters["otlp_grpc"]
    assert exporter.headers == {"authorization": "Bearer t0k", "x-a": "1"}
    assert not exporter.tls.insecure and exporter.tls.ca_file == "/etc/ca.pem"


@pytest.mark.parametrize("env, message", [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json': faulttrace sends grpc or http/protobuf"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_HEADERS": "novalue"},
     "OTEL_EXPORTER_OTLP_HEADERS: 'novalue' is not key=value"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "10s"},
     "OTEL_EXPORTER_OTLP_TIMEOUT: '10s' is not a number of milliseconds"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "c:4318"}, "exporters.otlp_http.endpoint: 'c:4318' is not a URL"),
])
def test_bad_sdk_variables_are_named(env, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, environ=env)
    assert err.value.problems[0].startswith(message), err.value.problems


def test_no_endpoint_variable_keeps_the_debug_exporter():
    assert load_config(None, environ={"OTEL_EXPORTER_OTLP_HEADERS": "a=b"}).pipeline.exporters == ["debug"]


def test_port_flags_move_the_defaults_keeping_the_host(tmp_path):
    ports = {"grpc": 14317, "http": 14318, "metrics": 18888}
    config = load_config(None, ports=ports, environ={})
    assert config.receivers["otlp"].protocols.grpc.endpoint == "127.0.0.1:14317"
    assert config.receivers["otlp"].protocols.http.endpoint == "127.0.0.1:14318"
    assert config.service.telemetry.metrics.endpoint == "127.0.0.1:18888"
    config = load_config(Path(__file__).parent / "data" / "collector.yaml", ports=ports)
    assert config.receivers["otlp"].protocols.grpc.endpoint == "0.0.0.0:14317"  # ":4317" kept its every-interface
    assert config.service.telemetry.metrics.endpoint == "0.0.0.0:18888"       # the pull reader's port
    text = ISSUE_YAML.replace("      http: {endpoint: 127.0.0.1:4318}\n", "")
    with pytest.raises(ConfigError, match="--http-port: receivers.otlp has no http protocol"):
        load_config(write(tmp_path, text), ports={"http": 1})


def test_the_example_config_validates_with_every_option_shown():
    example = Path(__file__).parent.parent / "examples" / "config.yaml"
    config = load_config(example, environ={})
    assert config.pipeline.processors == ["memory_limiter", "batch", "faulttrace"]
    assert config.service.telemetry.metrics.endpoint == "127.0.0.1:8888"


@pytest.mark.parametrize("sizer", ["requests", "items", "bytes"])
def test_every_sizer_of_the_collector(sizer):
    doc = _service({})
    doc["exporters"] = {"otlp": {"endpoint": "x:4317", "sending_queue": {"sizer": sizer, "queue_size": 5000}}}
    doc["service"]["pipelines"]["traces"]["exporters"] = ["otlp"]
    assert parse_config(doc).exporters["otlp"].sending_queue.sizer == sizer
    doc["exporters"]["otlp"]["sending_queue"]["sizer"] = "spans"
    with pytest.raises(ConfigError, match="exporters.otlp.sending_queue.sizer: Input should be 'requests', 'items' or"):
        parse_config(doc)


@pytest.mark.parametrize("bad", ["-0.1", "1.5", "\"high\""])
def test_min_confidence_is_a_probability_named_by_its_key(bad):
    with pytest.raises(ConfigError, match=r"processors\.faulttrace\.min_confidence"):
        load_config(None, [f"processors.faulttrace.min_confidence={bad}"])


def test_min_confidence_set_and_default():
    assert load_config(None, ["processors.faulttrace.min_confidence=0"]).processor.min_confidence == 0.0
    assert 0.0 < load_config(None).processor.min_confidence < 1.0
