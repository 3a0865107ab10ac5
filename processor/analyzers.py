"""Which analysis a pipeline runs, from its processor config: rules (with fault
trees) and the rule-free localizer, combined."""

from __future__ import annotations

from processor.analysis import Analyzer
from processor.combine import CombinedAnalyzer
from processor.config import FaulttraceProcessorConfig
from processor.evaluator import RuleAnalyzer
from processor.localizer import LocalizerAnalyzer
from processor.ruleset import load_configured_rules


def pipeline_analyzer(config: FaulttraceProcessorConfig, source: str = "<config>") -> Analyzer | None:
    """The analyzer a pipeline runs: in a worker process (``analysis_process``) or in this one.

    The rules are compiled here first either way, so a bad rule file is a
    configuration error at startup, not a dead worker."""
    if not config.analysis_process:
        return build_analyzer(config, source)
    rules = load_configured_rules(config, source)
    if not len(rules) and not config.localizer.enabled:
        return None
    from processor.worker import ProcessAnalyzer

    return ProcessAnalyzer(config)


def build_analyzer(config: FaulttraceProcessorConfig, source: str = "<config>") -> Analyzer | None:
    """The analysis in this process; None when there is nothing to run (no rules, localizer off)."""
    rules = load_configured_rules(config, source)
    rule_analyzers: list[Analyzer] = [RuleAnalyzer(rules)] if len(rules) else []
    localizers: list[Analyzer] = [LocalizerAnalyzer(config.localizer.baseline)] if config.localizer.enabled else []
    if not rule_analyzers and not localizers:
        return None
    return CombinedAnalyzer(rule_analyzers, localizers)
