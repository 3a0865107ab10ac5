"""faulttrace's rule language: text -> AST -> checked -> compiled DuckDB SQL.

This package imports nothing from ``processor``; the processor imports from it
only what is re-exported here.
"""

from dsl.projection import SPAN_COLUMNS, AttrRef, AttrSource, AttrType, column_name

__all__ = ["SPAN_COLUMNS", "AttrRef", "AttrSource", "AttrType", "column_name"]
