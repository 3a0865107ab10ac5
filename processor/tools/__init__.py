"""Commands `faulttrace serve` never runs: offline analysis, explain, rule fixture tests, evaluation, bench."""
