"""The analyzer a faulttrace processor config asks for: its rules, the localizer, the attributes they read.

The rules are the built-in library (``rules/``) plus the configured paths;
with the localizer (unless switched off) they make one ``CombinedAnalyzer``,
which weighs findings by their sources' healthy firing rates
(``processor.analysis.prevalence``), seeded from the localizer's baseline file
when there is one (``seed_healthy``).  Its projection is what it reads plus the
configured ``attributes``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import duckdb

from dsl import AttrRef, AttrSource, AttrType, RuleError, RuleSet, load_rules
from processor.analysis.attributes import Projection, span_table
from processor.analysis.combined import CombinedAnalyzer
from processor.analysis.prevalence import HealthyFiring
from processor.analysis.protocols import RELEASED_TABLE, Analyzer, with_row_numbers
from processor.analysis.rules import RuleAnalyzer
from processor.config import FaulttraceProcessorConfig
from processor.confmap import ConfigError
from processor.localizer.analyzer import ATTRIBUTION, LocalizerAnalyzer, Seed
from processor.localizer.history import HistoryConfig
from processor.localizer.snapshot import snapshot_path
from processor.otlp.tracefile import read_requests


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
    if not len(rules) and not config.localizer.enabled:
        return None
    healthy = HealthyFiring()
    seed = None
    if config.localizer.enabled and config.localizer.baseline is not None:
        # the baseline file is read once, for the throw-away localizer and the pipeline's
        seed = Seed(config.localizer.baseline)
        seed_healthy(config, rules, healthy, seed)
    return _combined(config, rules, healthy, snapshot=True, seed=seed)


def _combined(config: FaulttraceProcessorConfig, rules: RuleSet, healthy: HealthyFiring,
              snapshot: bool = False, seed: Seed | None = None) -> CombinedAnalyzer:
    rule_analyzers: list[Analyzer] = [RuleAnalyzer(rules)] if len(rules) else []
    localizers: list[Analyzer] = []
    if config.localizer.enabled:
        # the configured attributes are also compared by attribution, besides the conventional ones
        attribution = tuple(dict.fromkeys([*ATTRIBUTION, *sorted(configured_projection(config))]))
        # with a journal, the learned baseline is kept beside it across restarts (localizer.snapshot)
        history = HistoryConfig(snapshot=str(snapshot_path(config.storage.journal))
                                if snapshot and config.storage.journal else None)
        localizer = LocalizerAnalyzer(config.localizer.baseline, attribution=attribution, history=history,
                                      contrast=False,  # why_not_first is for `faulttrace explain` only
                                      seed=seed)
        if localizer.history.snapshots is not None:  # the rules' healthy firing rates are kept with it
            localizer.history.snapshots.attach("healthy_firing", healthy)
        localizers.append(localizer)
    return CombinedAnalyzer(rule_analyzers, localizers, healthy, config.min_confidence)


def seed_healthy(config: FaulttraceProcessorConfig, rules: RuleSet, healthy: HealthyFiring,
                 seed: Seed | None = None) -> None:
    """Teach ``healthy`` the firing on the localizer's baseline file: its traces analyzed as one
    batch by an analyzer of their own (a localizer seeded with the same file, which it then
    forgets), so the rates are what the configured analysis fires on fault-free traffic.
    ``seed``: the file as read for the pipeline's localizer too, which then starts from a copy of
    this one's seeded sketches and its null scores instead of computing them again."""
    seed = seed if seed is not None else Seed(config.localizer.baseline)
    analyzer = _combined(config, rules, healthy, seed=seed)
    try:
        table = span_table(read_requests(config.localizer.baseline), Projection.of(analyzer.projection()))
        if not table.num_rows:
            return
        conn = duckdb.connect()
        try:
            conn.register(RELEASED_TABLE, with_row_numbers(table))
            analyzer.analyze(conn, RELEASED_TABLE)
        finally:
            conn.close()
    finally:
        analyzer.close()
