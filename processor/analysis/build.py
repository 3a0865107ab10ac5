"""The analyzer a faulttrace processor config asks for: its rules, the localizer, the attributes they read.

The rules are the built-in library (``rules/``) plus the configured paths;
with the localizer (unless switched off) they make one ``CombinedAnalyzer``.
Its projection is what it reads plus the configured ``attributes``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dsl import AttrRef, AttrSource, AttrType, RuleError, RuleSet, load_rules
from processor.analysis.attributes import Projection
from processor.analysis.combined import CombinedAnalyzer
from processor.analysis.protocols import Analyzer
from processor.analysis.rules import RuleAnalyzer
from processor.config import FaulttraceProcessorConfig
from processor.confmap import ConfigError
from processor.localizer.analyzer import ATTRIBUTION, LocalizerAnalyzer
from processor.localizer.history import HistoryConfig
from processor.localizer.snapshot import snapshot_path


def builtin_rules_dir() -> Path:
    """The shipped rule library: package data when installed, ``rules/`` in a checkout."""
    try:
        root = resources.files("processor.builtin_rules")
        path = Path(str(root))
        if any(path.glob("*.rules")):
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "rules"


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


def configured_projection(config: FaulttraceProcessorConfig) -> set[AttrRef]:
    """The attributes the config names (``attributes``): projected for every batch, and
    compared by the localizer's attribution."""
    return {AttrRef(AttrSource(a.source), a.key, AttrType(a.type), a.event) for a in config.attributes}


def analysis_projection(config: FaulttraceProcessorConfig, analyzer: Analyzer) -> Projection:
    return Projection.of(configured_projection(config) | set(analyzer.projection()))


def build_analyzer(config: FaulttraceProcessorConfig, source: str = "<config>") -> Analyzer | None:
    """The configured analyzer, built in the calling process; None when there is
    nothing to run (no rules, localizer off)."""
    rules = load_configured_rules(config, source)
    rule_analyzers: list[Analyzer] = [RuleAnalyzer(rules)] if len(rules) else []
    localizers: list[Analyzer] = []
    if config.localizer.enabled:
        # the configured attributes are also compared by attribution, besides the conventional ones
        attribution = tuple(dict.fromkeys([*ATTRIBUTION, *sorted(configured_projection(config))]))
        # with a journal, the learned baseline is kept beside it across restarts (localizer.snapshot)
        history = HistoryConfig(snapshot=str(snapshot_path(config.storage.journal))
                                if config.storage.journal else None)
        localizers.append(LocalizerAnalyzer(config.localizer.baseline, attribution=attribution, history=history))
    if not rule_analyzers and not localizers:
        return None
    return CombinedAnalyzer(rule_analyzers, localizers)
