"""Every configuration under examples/ is checked: faulttrace's own with faulttrace's validator,
the others (Jaeger 2, Tempo, the collector, Compose) for the shape their current versions need.

No Docker engine runs here, so the third-party files are read, not run: the keys that must be
there, the references between them, and none of the keys their current versions removed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from processor.cli import main as faulttrace
from processor.config import load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _faulttrace_configs() -> list[Path]:
    """faulttrace's configs: the YAML files under examples/ with a faulttrace processor."""
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        doc = _load(path)
        if isinstance(doc, dict) and "faulttrace" in (doc.get("processors") or {}):
            found.append(path)
    return found


def _compose_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("docker-compose.yaml"))


def _image(compose: Path, service: str) -> str:
    return _load(compose)["services"][service]["image"]


def _version(image: str) -> tuple[int, ...]:
    tag = image.rsplit(":", 1)[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{image}: pin an exact version, not {tag!r}"
    return tuple(int(p) for p in tag.split("."))


def _mounted(compose: Path, service: str, target: str) -> Path:
    """The host file a Compose service mounts at ``target``."""
    for volume in _load(compose)["services"][service].get("volumes", []):
        source, dest = volume.split(":")[:2]
        if dest == target:
            return (compose.parent / source).resolve()
    raise AssertionError(f"{compose}: {service} mounts nothing at {target}")


def test_the_faulttrace_configs_are_found():
    names = {p.relative_to(EXAMPLES).as_posix() for p in _faulttrace_configs()}
    assert {"config.yaml", "docker/config.yaml", "jaeger/faulttrace.yaml", "tempo/faulttrace.yaml",
            "collector/faulttrace.yaml"} <= names


@pytest.mark.parametrize("path", _faulttrace_configs(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_faulttrace_validate_accepts(path: Path, capsys: pytest.CaptureFixture[str]):
    assert faulttrace(["validate", "--config", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


# --- Compose ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compose", _compose_files(), ids=lambda p: p.parent.name)
def test_compose_mounts_and_dependencies_exist(compose: Path):
    services = _load(compose)["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose.parent / source).exists(), f"{name} mounts {source}, which does not exist"
        depends = service.get("depends_on", {})
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on {dependency}, which is not a service"
        if "build" in service:
            assert (compose.parent / service["build"]["context"] / "Dockerfile").exists()


@pytest.mark.parametrize("compose", _compose_files(), ids=lambda p: p.parent.name)
def test_compose_faulttrace_services_mount_a_valid_config(compose: Path):
    services = _load(compose)["services"]
    built = [name for name, s in services.items() if s.get("image") == "faulttrace:local"]
    assert built, f"{compose}: no faulttrace service"
    for name in built:
        config = _mounted(compose, name, "/etc/faulttrace/config.yaml")
        load_config(config)  # raises ConfigError if invalid


def test_no_example_uses_jaeger_1():
    for compose in _compose_files():
        text = compose.read_text()
        assert "jaegertracing/all-in-one" not in text, f"{compose}: Jaeger 1 is past end of life"
        assert "COLLECTOR_OTLP_ENABLED" not in text, f"{compose}: a Jaeger 1 setting"


# --- Jaeger 2 ----------------------------------------------------------------------------------


def test_jaeger_2_image_runs_its_config():
    compose = EXAMPLES / "jaeger" / "docker-compose.yaml"
    image = _image(compose, "jaeger")
    assert image.startswith("jaegertracing/jaeger:") and _version(image)[0] == 2
    command = _load(compose)["services"]["jaeger"]["command"]
    assert command[:1] == ["--config"]
    assert _mounted(compose, "jaeger", command[1]) == (EXAMPLES / "jaeger" / "jaeger.yaml").resolve()
    # The collector example runs the same Jaeger with the same file.
    collector = EXAMPLES / "collector" / "docker-compose.yaml"
    assert _image(collector, "jaeger") == image
    assert _mounted(collector, "jaeger", "/etc/jaeger/config.yaml") == (EXAMPLES / "jaeger" / "jaeger.yaml").resolve()


def test_jaeger_2_config_shape():
    config = _load(EXAMPLES / "jaeger" / "jaeger.yaml")
    service = config["service"]
    assert {"jaeger_storage", "jaeger_query"} <= set(service["extensions"])
    assert set(service["extensions"]) <= set(config["extensions"])
    backends = config["extensions"]["jaeger_storage"]["backends"]
    assert config["extensions"]["jaeger_query"]["storage"]["traces"] in backends
    pipeline = service["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    assert "jaeger_storage_exporter" in pipeline["exporters"]
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] in backends
    # Reachable from the other containers (Jaeger 2 listens on localhost unless told otherwise).
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    # faulttrace exports to that port.
    assert _load(EXAMPLES / "jaeger" / "faulttrace.yaml")["exporters"]["otlp_grpc"]["endpoint"] == "jaeger:4317"


# --- Tempo -------------------------------------------------------------------------------------

# Removed by Tempo 3 with the ingester architecture (its upgrade guide, monolithic mode).
TEMPO_3_REMOVED = {"ingester", "ingester_client", "compactor", "metrics_generator_client"}


def test_tempo_config_is_valid_for_2_8_and_3():
    config = _load(EXAMPLES / "tempo" / "tempo.yaml")
    assert not TEMPO_3_REMOVED & set(config), f"blocks Tempo 3 removed: {sorted(TEMPO_3_REMOVED & set(config))}"
    assert config["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    trace = config["storage"]["trace"]
    assert trace["backend"] == "local" and trace["wal"]["path"] and trace["local"]["path"]
    # Tempo 3 reads vParquet4 or later only; the default is that since 2.8, and an explicit older one would break.
    version = (trace.get("block") or {}).get("version")
    assert version is None or version >= "vParquet4"
    assert config["server"]["http_listen_port"] == 3200
    image = _image(EXAMPLES / "tempo" / "docker-compose.yaml", "tempo")
    assert image.startswith("grafana/tempo:") and _version(image) >= (2, 8, 0)
    datasources = _load(EXAMPLES / "tempo" / "grafana-datasources.yaml")["datasources"]
    assert datasources[0]["url"].endswith(":3200")


# --- the collector -----------------------------------------------------------------------------

# Renamed in collector 0.144 (otlp -> otlp_grpc, otlphttp -> otlp_http); the old names are deprecated aliases.
DEPRECATED_EXPORTERS = {"otlp": "otlp_grpc", "otlphttp": "otlp_http"}


def _collector() -> dict[str, Any]:
    return _load(EXAMPLES / "collector" / "otel-collector.yaml")


def test_collector_uses_current_exporter_names():
    image = _image(EXAMPLES / "collector" / "docker-compose.yaml", "otel-collector")
    assert image.startswith("otel/opentelemetry-collector-contrib:") and _version(image) >= (0, 144, 0)
    for cid in _collector()["exporters"]:
        kind = cid.split("/", 1)[0]
        assert kind not in DEPRECATED_EXPORTERS, f"exporters.{cid}: use {DEPRECATED_EXPORTERS[kind]}"


def test_collector_pipelines_reference_defined_components():
    config = _collector()
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            missing = set(pipeline.get(kind, [])) - set(config[kind])
            assert not missing, f"{name}.{kind}: {sorted(missing)} not defined"
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    assert config["exporters"]["loadbalancing"]["routing_key"] == "traceID"


def test_collector_and_faulttrace_meet():
    config = _collector()
    annotated = config["receivers"]["otlp/annotated"]["protocols"]["grpc"]["endpoint"]
    faulttrace_config = _load(EXAMPLES / "collector" / "faulttrace.yaml")
    assert faulttrace_config["exporters"]["otlp_grpc"]["endpoint"].split(":")[1] == annotated.split(":")[1]
    grpc_in = faulttrace_config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    hosts = config["exporters"]["loadbalancing"]["resolver"]["static"]["hostnames"]
    assert all(h.split(":")[1] == grpc_in.split(":")[1] for h in hosts)


def test_tail_sampling_keeps_root_causes_and_a_sample_of_the_rest():
    config = _collector()
    sampling = config["processors"]["tail_sampling"]
    policies = {p["type"]: p for p in sampling["policies"]}
    keep = policies["boolean_attribute"]["boolean_attribute"]
    assert keep == {"key": "rca.root_cause", "value": True}  # the attribute faulttrace sets, as a boolean
    percentage = policies["probabilistic"]["probabilistic"]["sampling_percentage"]
    assert 0 < percentage < 100
    # Only after faulttrace: in the pipeline that receives the annotated spans, never in the one feeding it.
    pipelines = config["service"]["pipelines"]
    with_sampling = [name for name, p in pipelines.items() if "tail_sampling" in p.get("processors", [])]
    assert with_sampling == ["traces/out"]
    assert pipelines["traces/out"]["receivers"] == ["otlp/annotated"]
    assert "loadbalancing" not in pipelines["traces/out"]["exporters"]

