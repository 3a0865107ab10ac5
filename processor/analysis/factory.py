"""Where a pipeline's analysis runs: in a worker process (``analysis_process``) or on a thread here."""

from __future__ import annotations

from processor.analysis.build import analysis_projection, build_analyzer, load_configured_rules
from processor.analysis.protocols import Analysis, Analyzer
from processor.analysis.runner import LocalAnalysis
from processor.analysis.worker import ProcessAnalysis
from processor.config import FaulttraceProcessorConfig


def pipeline_analysis(config: FaulttraceProcessorConfig, analyzer: Analyzer | None = None,
                      source: str = "<config>") -> Analysis | None:
    """The analysis a pipeline runs: ``analyzer`` if given, else the configured
    one, in a worker process (``analysis_process``) or in this one; None when
    there is nothing to run.

    The rules are compiled here first either way, so a bad rule file is a
    configuration error at startup, not a dead worker."""
    if analyzer is not None:
        return LocalAnalysis(analyzer, analysis_projection(config, analyzer), config.storage)
    if not config.analysis_process:
        built = build_analyzer(config, source)
        return LocalAnalysis(built, analysis_projection(config, built), config.storage) if built else None
    rules = load_configured_rules(config, source)
    if not len(rules) and not config.localizer.enabled:
        return None
    return ProcessAnalysis(config)
