"""The public face of ``dsl``: load rule files into a ``RuleSet`` and run it.

``load_rules`` reads, parses, checks and compiles; ``RuleSet.evaluate`` runs
every rule over one batch of completed traces held in a DuckDB table (the
store's contract, ``dsl.projection``) and returns ``Finding`` values.
``check_paths``/``cli_check`` serve ``faulttrace check``.
"""

from __future__ import annotations

import glob
import logging
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TextIO

import duckdb

from dsl import ir
from dsl.checker import check
from dsl.compiler import CompiledRule, cleanup_statements, compile_rule, prepare_statements, quote_ident
from dsl.diagnostics import Diagnostic, SourceSpan, render_all, sort_key, to_json
from dsl.parser import parse
from dsl.projection import SPAN_COLUMNS, AttrRef, column_name

PathLike = str | Path
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule firing on one span of one trace."""

    trace_id: bytes
    span_id: bytes
    rule_id: str
    layer: str
    severity: str
    confidence: float
    message: str
    depth: int = 0  # of the blamed span; deeper spans rank first on ties
    title: str = ""

    @property
    def score(self) -> float:
        """Ranking weight: confidence x severity (1 info .. 5 critical).

        Rounded so that products equal in decimal tie (0.6 x 3 is 1.7999999999999998
        in binary floating point, 0.9 x 2 is 1.8) and the tie goes to the deeper span."""
        return round(self.confidence * ir.SEVERITIES[self.severity], 9)


class RuleError(Exception):
    """Rule files with errors; carries every diagnostic and the sources."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str]) -> None:
        self.diagnostics = diagnostics
        self.sources = sources
        super().__init__(render_all(diagnostics, sources))


class RuleRuntimeError(Exception):
    """A compiled rule failed in DuckDB (a bug, or a table off the contract)."""

    def __init__(self, rule_id: str, cause: Exception) -> None:
        self.rule_id = rule_id
        super().__init__(f"rule {rule_id}: {cause}")


@dataclass(frozen=True)
class RuleSet:
    """Compiled rules plus what the store must provide for them."""

    rules: tuple[CompiledRule, ...]
    warnings: tuple[Diagnostic, ...] = ()
    projection: frozenset[AttrRef] = frozenset()
    needs: frozenset[str] = frozenset()
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)

    def select(self, ids: Iterable[str]) -> RuleSet:
        """The rule set restricted to ``ids`` (fixture tests run a few rules)."""
        wanted = set(ids)
        rules = tuple(r for r in self.rules if r.id in wanted)
        return RuleSet(rules, self.warnings, self.projection, _needs(rules), self.sources)

    @property
    def columns(self) -> tuple[str, ...]:
        """The store columns the rules read: intrinsics, then the projection."""
        return tuple(n for n, _ in SPAN_COLUMNS) + tuple(column_name(r) for r in sorted(self.projection))

    def prepare_statements(self, conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
        """The statements ``evaluate`` runs first (exposed for benchmarks)."""
        return prepare_statements(table, self.needs, self.columns, _row_key(conn, table))

    def evaluate(
        self, conn: duckdb.DuckDBPyConnection, table: str, on_error: Callable[[RuleRuntimeError], None] | None = None,
    ) -> list[Finding]:
        """All findings for the traces in ``table``, ranked within each trace
        (score descending, deeper spans first, then rule id).

        Builds the per-batch temp tables on ``conn`` (temp tables are per
        connection: evaluate batches concurrently on separate cursors), runs
        each rule's statement over the whole batch, and drops the temp tables.
        A rule that fails in DuckDB does not cost the others their findings:
        the error goes to ``on_error`` (default: logged) and evaluation goes on."""
        if not self.rules:
            return []
        report = on_error or _log_rule_error
        for stmt in self.prepare_statements(conn, table):
            conn.execute(stmt)
        try:
            findings = self._run_all(conn, report)
        finally:
            for stmt in cleanup_statements():
                conn.execute(stmt)
        findings.sort(key=lambda f: (f.trace_id, -f.score, -f.depth, f.rule_id, f.span_id))
        return findings


    def _run_all(self, conn: duckdb.DuckDBPyConnection,
                 report: Callable[[RuleRuntimeError], None]) -> list[Finding]:
        """Every rule in one statement (one round trip: in a busy process each
        return from DuckDB waits for the interpreter lock, so seventy statements
        cost far more than one); rule by rule only if that fails, so one broken
        rule does not cost the others their findings."""
        sql, params = _union(self.rules)
        try:
            rows = conn.execute(sql, params).fetchall()
        except duckdb.Error:
            findings = []
            for rule in self.rules:
                try:
                    findings += _run(conn, rule)
                except RuleRuntimeError as err:
                    report(err)
            return findings
        return [_finding(self.rules[i], t, sp, d, msg) for i, t, sp, d, msg in rows]


_PARAM = re.compile(r"\$(\d+)")


@lru_cache(maxsize=8)
def _union(rules: tuple[CompiledRule, ...]) -> tuple[str, list[object]]:
    """One UNION ALL of every rule's statement, parameters renumbered, tagged by rule index.

    The compiler binds every literal as a ``$n`` parameter and writes only
    ``[a-z0-9_]`` identifiers, so ``$n`` occurs in a statement only as a parameter."""
    parts, params = [], []
    for i, rule in enumerate(rules):
        offset = len(params)
        sql = _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", rule.sql)
        parts.append(f"SELECT {i} AS __rule, * FROM ({sql})")
        params += list(rule.params)
    return " UNION ALL ".join(parts), params


def _log_rule_error(err: RuleRuntimeError) -> None:
    log.warning("rule %s failed and was skipped for this batch: %s", err.rule_id, err)


ROW_KEY = "_row"  # a dense row number a caller may add to the batch table (saves a copy)


def _row_key(conn: duckdb.DuckDBPyConnection, table: str) -> str | None:
    """How rows of ``table`` are numbered: its ``_row`` column, its rowid, or neither (a view)."""
    cols = [d[0] for d in conn.execute(f"SELECT * FROM {quote_ident(table)} LIMIT 0").description]
    if ROW_KEY in cols:
        return ROW_KEY
    try:
        conn.execute(f"SELECT rowid FROM {quote_ident(table)} LIMIT 0").fetchall()
    except duckdb.Error:
        return None
    return "rowid"


def _run(conn: duckdb.DuckDBPyConnection, rule: CompiledRule) -> list[Finding]:
    try:
        rows = conn.execute(rule.sql, list(rule.params)).fetchall()
    except duckdb.Error as err:
        raise RuleRuntimeError(rule.id, err) from err
    return [_finding(rule, t, s, d, msg) for t, s, d, msg in rows]


def _finding(rule: CompiledRule, trace_id: bytes, span_id: bytes, depth: int, message: str) -> Finding:
    m = rule.meta
    return Finding(bytes(trace_id), bytes(span_id), m.id, m.layer, m.severity, m.confidence, message, int(depth),
                   m.title)


def _needs(rules: Iterable[CompiledRule]) -> frozenset[str]:
    return frozenset().union(*(r.needs for r in rules))


def _projection(rules: Iterable[ir.CheckedRule]) -> frozenset[AttrRef]:
    refs: set[AttrRef] = set()
    for rule in rules:
        roots = [n for n in (rule.where, *rule.message) if n is not None and not isinstance(n, str)]
        for root in roots:
            for node in ir.walk(root):  # type: ignore[arg-type]
                if isinstance(node, ir.AttrValue):
                    refs.update(node.refs)
    return frozenset(refs)


# ---- files ------------------------------------------------------------------------


def expand_paths(paths: Iterable[PathLike]) -> tuple[list[Path], list[Diagnostic]]:
    """Files named by ``paths``: files, directories (``*.rules`` below them)
    and globs; a path that matches nothing is an E040 diagnostic."""
    found: list[Path] = []
    diags: list[Diagnostic] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found += sorted(p.rglob("*.rules"))
        elif p.is_file():
            found.append(p)
        elif any(ch in str(raw) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True))
            found += [m for m in matches if m.is_file()]
            if not matches:
                diags.append(Diagnostic("E040", f"no rule files match `{raw}`", SourceSpan(str(raw), 0, 0, 0, 0)))
        else:
            diags.append(Diagnostic("E040", f"cannot read `{raw}`: no such file or directory", SourceSpan(str(raw), 0, 0, 0, 0)))
    unique = list(dict.fromkeys(found))
    return unique, diags


def _analyse(paths: Iterable[PathLike]) -> tuple[list[ir.CheckedRule], list[Diagnostic], dict[str, str]]:
    files, diags = expand_paths(paths)
    sources: dict[str, str] = {}
    trees = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            diags.append(Diagnostic("E040", f"cannot read `{path}`: {err}", SourceSpan(str(path), 0, 0, 0, 0)))
            continue
        sources[str(path)] = text
        tree, syntax = parse(text, str(path))
        trees.append(tree)
        diags += syntax
    conn = duckdb.connect()  # private, in memory: RE2 judges the patterns it will run
    try:
        result = check(trees, lambda pattern: _re2_problem(conn, pattern))
    finally:
        conn.close()
    return result.rules, diags + result.diagnostics, sources


def _re2_problem(conn: duckdb.DuckDBPyConnection, pattern: str) -> str:
    try:
        conn.execute("SELECT regexp_matches('', $1)", [pattern]).fetchall()
    except duckdb.Error as err:
        return str(err).removeprefix("Invalid Input Error: ")
    return ""


def _diagnose(paths: Iterable[PathLike]) -> tuple[list[ir.CheckedRule], list[Diagnostic], dict[str, str]]:
    """Everything ``faulttrace check`` reports: parse and check problems, and,
    when there is no error, DuckDB's verdict on each compiled statement."""
    rules, diags, sources = _analyse(paths)
    if not any(d.is_error for d in diags):
        diags += _validate([compile_rule(r) for r in rules], rules)
    return rules, sorted(diags, key=sort_key), sources


def check_paths(paths: Iterable[PathLike]) -> list[Diagnostic]:
    """Every diagnostic of the rule files under ``paths``, sorted by position."""
    return _diagnose(paths)[1]


def load_rules(paths: Iterable[PathLike], *, validate: bool = True) -> RuleSet:
    """Parse, check and compile the rule files under ``paths``.

    Raises ``RuleError`` (carrying every diagnostic) if there is any error;
    warnings are kept on the returned ``RuleSet``.  With ``validate`` each
    compiled statement is run once over an empty table so that DuckDB itself
    confirms it (e.g. RE2 accepts every pattern) before any batch arrives."""
    rules, diags, sources = _analyse(paths)
    if any(d.is_error for d in diags):
        raise RuleError(sorted(diags, key=sort_key), sources)
    compiled = tuple(compile_rule(r) for r in rules)
    if validate:
        problems = _validate(list(compiled), rules)
        if problems:
            raise RuleError(problems + diags, sources)
    return RuleSet(compiled, tuple(sorted(diags, key=sort_key)), _projection(rules), _needs(compiled), sources)


def _validate(compiled: list[CompiledRule], checked: list[ir.CheckedRule]) -> list[Diagnostic]:
    """Run every statement over an empty contract table (in a private
    in-memory database); a failure is a compiler bug or a bad regex."""
    if not compiled:
        return []
    projection = _projection(checked)
    conn = duckdb.connect()
    try:
        create_span_table(conn, "spans", projection)
        columns = tuple(n for n, _ in SPAN_COLUMNS) + tuple(column_name(r) for r in sorted(projection))
        for stmt in prepare_statements("spans", _needs(compiled), columns):
            conn.execute(stmt)
        diags = []
        for rule, source in zip(compiled, checked):
            try:
                conn.execute(rule.sql, list(rule.params)).fetchall()
            except duckdb.Error as err:
                diags.append(Diagnostic("E050", f"rule `{rule.id}` was rejected by DuckDB: {err}", source.span,
                                        ("this is a bug in faulttrace's compiler unless a regex is at fault",)))
        return diags
    finally:
        conn.close()


def create_span_table(conn: duckdb.DuckDBPyConnection, table: str, projection: Iterable[AttrRef]) -> None:
    """Create an empty span table per the store contract (intrinsic columns
    plus one typed column per projected attribute)."""
    cols = [f"{name} {typ}" for name, typ in SPAN_COLUMNS]
    cols += [f"{column_name(ref)} {ref.type.sql_type}" for ref in sorted(projection)]
    conn.execute(f"CREATE OR REPLACE TABLE {quote_ident(table)} ({', '.join(cols)})")


# ---- `faulttrace check` -----------------------------------------------------------


def cli_check(paths: Iterable[PathLike], fmt: str = "text", out: TextIO | None = None) -> int:
    """Print the diagnostics of the rule files under ``paths`` (``fmt`` is
    ``text`` or ``json``); the exit code is 1 if any is an error."""
    stream = out if out is not None else sys.stdout
    rules, diags, sources = _diagnose(paths)
    if fmt == "json":
        stream.write(to_json(diags) + "\n")
    elif diags:
        stream.write(render_all(diags, sources) + "\n")
    else:
        stream.write(f"ok: {len(rules)} rule(s) in {len(sources)} file(s)\n")
    return 1 if any(d.is_error for d in diags) else 0
