"""Benchmark (a script, not a test): rules of mixed kinds over a batch of
100,000 spans, evaluated with ``RuleSet.evaluate``.

    .venv/bin/python -m tests.dsl.bench_rules [--rules 50] [--spans 100000] [--repeat 3]
        [--statement-rules N] [--statements] [--masks-per-scan N]

Prints the median evaluation time of ``--repeat`` runs and its share per
rule, how long the prepare step takes, what the columnar plan
(``dsl.columnar``) makes of the rules, and the slowest statements of the
rules it leaves to run alone.  Targets (issue 15): 50 rules <= 1 s; 2,000
rules <= 10 s and within 4x of 500 rules (linear).  ``--statements`` runs
every rule as a statement (the columnar plan off, as before it);
``--statement-rules`` sets how many rules share a statement (default
``dsl.api.STATEMENT_RULES``; the number of rules puts them all in one, as
before the bound); ``--masks-per-scan`` sets ``dsl.columnar.MASKS_PER_SCAN``.

The generated rules repeat: 2,000 of them hold 105 distinct conditions (three
families of templates, a threshold of 1 to 7), which the columnar plan
computes once each.  ``--distinct`` makes every rule's thresholds its own
(``n`` from the rule's number), a rule set without repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from dsl import columnar, load_rules
from dsl.api import STATEMENT_RULES, RuleSet, create_span_table
from dsl.compiler import cleanup_statements
from dsl.projection import SPAN_COLUMNS, AttrType, column_name
from processor.tools.bench import bench_rule_text  # the same 50 rules the pipeline bench runs

SPANS_PER_TRACE = 20

def _fill(ref_type: AttrType, salt: int) -> str:
    """A column of synthetic attribute values: mostly healthy, ~1% odd."""
    h = f"CAST(hash(i, j, {salt}) % 1000003 AS BIGINT)"
    return {
        AttrType.STRING: f"CASE WHEN {h} % 3 = 0 THEN NULL ELSE ['postgresql', 'redis', '/v1/x', 'pod-3', 'ValueError', 'E2', 'ok', 'fine'][{h} % 8 + 1] END",
        AttrType.INT: f"CASE WHEN {h} % 2 = 0 THEN NULL WHEN {h} % 100 = 1 THEN 503 ELSE 200 END",
        AttrType.DOUBLE: f"CASE WHEN {h} % 100 = 1 THEN 1.9 ELSE 0.7 END",
        AttrType.BOOL: f"{h} % 2 = 0",
        AttrType.STRING_ARRAY: f"CASE WHEN {h} % 50 = 0 THEN ['stop', 'length'] ELSE ['stop'] END",
        AttrType.INT_ARRAY: "[1, 2]",
        AttrType.DOUBLE_ARRAY: "[1.0]",
        AttrType.PRESENT: f"{h} % 20 = 0",
        AttrType.ANY: f"CASE WHEN {h} % 3 = 0 THEN NULL ELSE ['42', 'true', 'ok', '0.5'][{h} % 4 + 1] END",
    }[ref_type]


def distinct_rule_text(n_rules: int) -> str:
    """``bench_rule_text``'s rules made distinct: each rule's condition, and the condition
    of each of its quantifiers, gets a term of its own that always holds (``name != "r<i>"``),
    so no two rules share a condition or a quantifier while the same spans fire."""
    rules = bench_rule_text(n_rules).split("\n\n")
    out = []
    for i, rule in enumerate(rules):
        term = f'.name != "r{i}" and '
        rule = re.sub(r"\b(\w) of c where \1\.", lambda m: f"{m[1]} of c where {m[1]}{term}{m[1]}.", rule)
        rule = re.sub(r"\bspan s where s\.", f"span s where s{term}s.", rule)
        rule = rule.replace("for child d of c)", f'for child d of c where d.name != "r{i}")')
        out.append(rule.replace("match span c where ", f"match span c where c{term}", 1))
    return "\n\n".join(out)


def build_batch(conn: duckdb.DuckDBPyConnection, ruleset: RuleSet, n_spans: int) -> None:
    refs = sorted(ruleset.projection)
    create_span_table(conn, "batch", refs)
    n_traces = n_spans // SPANS_PER_TRACE
    cols = [name for name, _ in SPAN_COLUMNS] + [column_name(r) for r in refs]
    values = [
        "encode(printf('%016d', i))",  # trace_id
        "encode(printf('%08d', j))",  # span_id
        "CASE WHEN j = 0 THEN NULL ELSE encode(printf('%08d', (j - 1) // 3)) END",  # 3-ary tree
        "'svc-' || (j % 5)",
        "['GET /api/v1/items', 'SELECT', 'call', 'handler', 'POST /api/v2/x'][j % 5 + 1]",
        "CAST(CASE WHEN j = 0 THEN 2 ELSE CAST(hash(i, j) % 4 AS BIGINT) + 1 END AS UTINYINT)",
        "1700000000000000000 + i * 1000000000 + j * 1000000",
        # durations: mostly under 10 ms, 1% up to 1 s
        "1700000000000000000 + i * 1000000000 + j * 1000000 + CASE WHEN hash(i, j, 8) % 100 = 0 "
        "THEN CAST(hash(i, j, 7) % 1000000000 AS BIGINT) ELSE CAST(hash(i, j, 7) % 10000000 AS BIGINT) END",
        "CAST(CASE WHEN hash(i, j, 9) % 50 = 0 THEN 2 ELSE 0 END AS UTINYINT)",  # 2% errors
        "''",
    ] + [_fill(r.type, k) for k, r in enumerate(refs)]
    conn.execute(
        f"INSERT INTO batch ({', '.join(cols)}) SELECT {', '.join(values)} "
        f"FROM range({n_traces}) AS t(i), range({SPANS_PER_TRACE}) AS s(j)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=100_000)
    ap.add_argument("--rules", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--statement-rules", type=int, default=STATEMENT_RULES)
    ap.add_argument("--statements", action="store_true", help="every rule as a statement (no columnar plan)")
    ap.add_argument("--masks-per-scan", type=int, default=columnar.MASKS_PER_SCAN)
    ap.add_argument("--distinct", action="store_true", help="no two rules alike: thresholds from the rule's number")
    args = ap.parse_args()
    columnar.MASKS_PER_SCAN = args.masks_per_scan
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.rules"
        path.write_text(distinct_rule_text(args.rules) if args.distinct else bench_rule_text(args.rules), encoding="utf-8")
        ruleset = dataclasses.replace(load_rules([path], validate=False), statement_rules=args.statement_rules,
                                      columnar=not args.statements)
    conn = duckdb.connect()
    build_batch(conn, ruleset, args.spans)
    times = []
    cpu = []  # CPU time of the process (DuckDB's threads too): steadier than wall time on a shared machine
    findings = []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        findings = ruleset.evaluate(conn, "batch")
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    # the split, measured separately
    t0 = time.perf_counter()
    for stmt in ruleset.prepare_statements(conn, "batch"):
        conn.execute(stmt)
    prep = time.perf_counter() - t0
    slowest = []
    for stmt in ruleset._rule_statements:
        t1 = time.perf_counter()
        conn.execute(stmt.parsed, list(stmt.params)).fetchall()
        slowest.append((time.perf_counter() - t1, f"{stmt.rules[0].id}..{stmt.rules[-1].id}"))
    for stmt in cleanup_statements():
        conn.execute(stmt)
    median = statistics.median(times)
    plan = ruleset._columnar
    print(f"{len(ruleset)} rules over {args.spans} spans, {args.statement_rules} a statement: median of "
          f"{args.repeat}: {median:.3f} s, {median / len(ruleset) * 1000:.2f} ms a rule "
          f"(runs {', '.join(f'{t:.2f}' for t in times)}; {len(findings)} findings; prepare {prep:.3f} s; "
          f"CPU median {statistics.median(cpu):.3f} s)")
    print(f"  columnar: {len(plan.rules)} rules, {len(plan.conditions)} distinct conditions in {len(plan.scans)} scan(s), "
          f"{plan.shared_count} shared aggregates; {len(plan.rest)} rules as statements")
    for secs, rids in sorted(slowest, reverse=True)[:5]:
        print(f"  {rids}: {secs * 1000:.1f} ms")


if __name__ == "__main__":
    main()
