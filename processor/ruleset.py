"""Which rules a pipeline runs: the built-in library (``rules/``) plus configured paths."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dsl import RuleError, RuleSet, load_rules
from processor.config import ConfigError, FaulttraceProcessorConfig


def builtin_rules_dir() -> Path:
    """The shipped rule library: package data when installed, ``rules/`` in a checkout."""
    try:
        root = resources.files("processor.builtin_rules")
        path = Path(str(root))
        if any(path.glob("*.rules")):
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[1] / "rules"


def rule_paths(config: FaulttraceProcessorConfig) -> list[str]:
    paths = [str(p) for p in sorted(builtin_rules_dir().glob("*.rules"))] if config.builtin_rules else []
    return paths + list(config.rules)


def load_configured_rules(config: FaulttraceProcessorConfig, source: str = "<config>") -> RuleSet:
    """The rule set of a faulttrace processor config; rule errors become a ConfigError."""
    paths = rule_paths(config)
    if not paths:
        return load_rules([])
    try:
        return load_rules(paths)
    except RuleError as err:
        raise ConfigError(source, [f"processors.faulttrace.rules: the rules do not compile:\n{err}"]) from None
