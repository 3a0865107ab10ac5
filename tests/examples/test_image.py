"""What the container image and a fresh install rest on: the licence, bounded dependencies, the
constraints file the Dockerfile installs with, the HEALTHCHECK that follows the configuration,
and demo_app.py saying what to install when the SDK is missing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from processor.config import load_config
from tests.support.harness import free_port, start_pipeline, wait_until

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in PYPROJECT.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_license_is_the_apache_2_text():
    text = (ROOT / "LICENSE").read_text()
    assert PYPROJECT["license"]["text"] == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 10_000  # the full text, not a pointer


def test_every_dependency_has_an_upper_bound():
    unbounded = [str(r) for r in _requirements()
                 if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)]
    assert not unbounded, f"no upper bound: {unbounded}"


def test_constraints_pin_every_runtime_dependency_within_its_range():
    pins = _constraints()
    for req in (Requirement(r) for r in PYPROJECT["dependencies"]):
        if req.marker is not None and not req.marker.evaluate({"python_version": "3.11"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} outside {req.specifier}"


def test_the_image_installs_with_the_constraints_and_probes_the_configured_address():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--constraint constraints.txt" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!constraints.txt" in ignored and "!examples/docker/healthcheck.py" in ignored
    assert "COPY examples/docker/healthcheck.py /usr/local/lib/faulttrace/healthcheck.py" in dockerfile
    healthcheck = next(line for line in dockerfile.splitlines() if line.lstrip().startswith("CMD [\"python\""))
    assert "/usr/local/lib/faulttrace/healthcheck.py" in healthcheck and "8888" not in healthcheck


# --- the HEALTHCHECK probe, against a real pipeline ------------------------------------------


def _probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "examples" / "docker" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _config(path: Path, extension_port: int | None, metrics_port: int) -> Path:
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {"faulttrace": {"storage": {"path": ":memory:"}, "builtin_rules": False,
                                      "localizer": {"enabled": False}, "analysis_process": False}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                             "exporters": ["debug"]}},
                    "telemetry": {"metrics": {"address": f"0.0.0.0:{metrics_port}"}}},
    }
    if extension_port is not None:
        config["extensions"] = {"health_check/probe": {"endpoint": f"0.0.0.0:{extension_port}", "path": "/ready"}}
        config["service"]["extensions"] = ["health_check/probe"]
    path.write_text(yaml.safe_dump(config))
    return path


def test_probe_reads_the_address_from_the_configuration(tmp_path: Path):
    probe = _probe()
    with_extension = _config(tmp_path / "a.yaml", 23133, 28888)
    assert [p.url for p in probe.probes(["--config", str(with_extension)])] == ["http://127.0.0.1:23133/ready"]
    without = _config(tmp_path / "b.yaml", None, 28888)
    assert [p.url for p in probe.probes(["--config", str(without)])] == ["http://127.0.0.1:28888/healthz"]
    # serve's own flags apply as they do to serve.
    moved = probe.probes(["--config", str(without), "--metrics-port", "29999"])
    assert [p.url for p in moved] == ["http://127.0.0.1:29999/healthz"]
    off = probe.probes(["--config", str(without), "--set", "service.telemetry.metrics.level=none"])
    assert off == []


def test_probe_is_healthy_only_while_the_configured_endpoint_answers_200(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]):
    probe = _probe()
    extension_port, metrics_port = free_port(), free_port()
    path = _config(tmp_path / "config.yaml", extension_port, metrics_port)
    args = ["--", "serve", "--config", str(path)]
    assert probe.main(args) == 1  # nothing listening yet
    assert f"127.0.0.1:{extension_port}/ready" in capsys.readouterr().err
    running = start_pipeline(load_config(path))
    try:
        wait_until(lambda: probe.main(args) == 0, timeout=10, what="the probe to pass")
    finally:
        running.stop()
    assert probe.main(args) == 1


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="no /proc here (the image is Linux)")
def test_probe_reads_serves_command_line_from_proc(tmp_path: Path):
    """As in the image: the arguments come from the serving process's command line, not from the probe's."""
    probe = _probe()
    path = _config(tmp_path / "config.yaml", None, 28888)
    # A process whose argv looks like the image's ENTRYPOINT + CMD (python runs a script named faulttrace).
    script = tmp_path / "faulttrace"
    script.write_text("import time\ntime.sleep(30)\n")
    child = subprocess.Popen([sys.executable, str(script), "serve", "--config", str(path), "--metrics-port", "27777"])
    try:
        wait_until(lambda: "serve" in Path(f"/proc/{child.pid}/cmdline").read_bytes().decode(), what="argv")
        assert probe.serve_arguments(child.pid) == ["--config", str(path), "--metrics-port", "27777"]
        assert [p.url for p in probe.probes(probe.serve_arguments(child.pid))] == ["http://127.0.0.1:27777/healthz"]
    finally:
        child.kill()
        child.wait()


# --- demo_app.py without the SDK ---------------------------------------------------------------


def test_demo_app_says_what_to_install_without_the_sdk():
    # sys.modules[name] = None makes `import name` raise ImportError, as in a venv without the SDK.
    code = ("import runpy, sys; sys.modules['opentelemetry.sdk'] = None; sys.argv = ['demo_app.py']; "
            f"runpy.run_path({str(ROOT / 'examples' / 'demo_app.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "pip install '.[demo]'" in result.stderr
    assert "demo" in PYPROJECT["optional-dependencies"]
