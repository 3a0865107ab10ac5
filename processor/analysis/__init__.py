"""Analysis of released batches: the rules (with fault trees) and the localizer as analyzers,
their verdicts and calibration, and where a pipeline runs them (a thread or a worker process)."""
