"""Every configuration shown in docs/security.md is valid as written (its files made to exist)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from processor.config import parse_config
from processor.confmap import expand_env

DOC = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)


def test_the_doc_has_its_examples():
    assert len(EXAMPLES) == 3


@pytest.mark.parametrize("text", EXAMPLES, ids=["tls", "mtls", "bearer"])
def test_each_example_validates(text, tmp_path):
    # The TLS files must exist when a config is read: point them at files that do.
    for path in set(re.findall(r"_file: (/\S+)", text)):
        (tmp_path / Path(path).name).write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
        text = text.replace(path, str(tmp_path / Path(path).name))
    config = parse_config(yaml.safe_load(expand_env(text, {"OTLP_TOKEN": "t0ken"})), "docs/security.md")
    assert config.pipeline.receivers == ["otlp"]
