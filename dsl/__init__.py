"""faulttrace's rule language: text -> AST -> checked -> compiled DuckDB SQL.

This package imports nothing from ``processor``; the processor imports from it
only what is re-exported here.
"""

from dsl.projection import SPAN_COLUMNS, AttrRef, AttrSource, AttrType, any_text, column_name

__all__ = ["SPAN_COLUMNS", "AttrRef", "AttrSource", "AttrType", "any_text", "column_name"]

from dsl.api import (  # noqa: E402
    Evaluation,
    Finding,
    KnownBatch,
    RuleError,
    RuleRuntimeError,
    RuleSet,
    check_paths,
    cli_check,
    columns_of,
    known_batch,
    known_of,
    load_rules,
)
from dsl.compiler import BASELINE_COLUMNS, BASELINE_TABLE  # noqa: E402
from dsl.diagnostics import Diagnostic, Severity, SourceSpan  # noqa: E402
from dsl.faulttree import TreeOutcome  # noqa: E402
from dsl.spantree import antecedents_sql, covered_sql, no_parent_sql, root_key_sql, self_time_sql  # noqa: E402

__all__ += [
    "BASELINE_COLUMNS", "BASELINE_TABLE", "Diagnostic", "Evaluation", "Finding", "KnownBatch", "TreeOutcome", "RuleError", "RuleRuntimeError", "RuleSet", "Severity", "SourceSpan",
    "antecedents_sql", "check_paths", "cli_check", "columns_of", "covered_sql", "fixtures", "known_batch", "known_of", "load_rules", "no_parent_sql", "root_key_sql",
    "self_time_sql",
]


def __getattr__(name: str) -> object:
    # dsl.fixtures (fixture tests as data) loads YAML: imported when first asked for, not by every
    # ``faulttrace check``
    if name == "fixtures":
        import importlib

        return importlib.import_module("dsl.fixtures")
    raise AttributeError(f"module 'dsl' has no attribute {name!r}")
