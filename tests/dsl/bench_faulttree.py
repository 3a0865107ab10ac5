"""Benchmark (a script, not a test): what fault trees add to rule evaluation.

The 50 mixed rules of ``bench_rules.py`` over a batch of 100,000 spans, alone
and with 20 fault trees over them (basic events on those rules, gates of
every kind, house events, four kinds of top event):

    .venv/bin/python -m tests.dsl.bench_faulttree [--spans 100000] [--trees 20] [--repeat 5]

Prints the best time of ``--repeat`` runs of each and the overhead of the
trees (the target is <= 20%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from dsl import load_rules
from processor.tools.bench import bench_rule_text
from tests.dsl.bench_rules import build_batch

TOPS = [
    "top span r where r.is_root and r.status = error",
    "top span r where r.is_root and r.duration > 500ms",
    "top span e where e.status = error",
    "top rule bench.r{a}",
]
HOUSES = '''
house canary = span s where s.resource["k8s.pod.name"] = "pod-3"
house api = span s where s.name starts_with "GET /api"
'''


def tree_text(n_trees: int, n_rules: int) -> str:
    out = [HOUSES]
    for i in range(n_trees):
        r = [f"bench.r{(i * 7 + k * 3) % n_rules}" for k in range(7)]
        out.append(f"basic b{i} = rule {r[0]} prior 0.02")
        out.append(f"event e{i} = atleast 2 of {{{r[1]}, {r[2]}, {r[3]}}}")
        house = "canary" if i % 2 else "api"
        top = TOPS[i % len(TOPS)].format(a=(i * 11) % n_rules)
        out.append(f'tree bench.t{i} {{\n  title "tree {i}"\n  {top}\n'
                   f"  cause b{i} or e{i} or ({r[4]} and not {r[5]}) or ({house} and {r[6]})\n}}")
    return "\n".join(out) + "\n"


def best(fn, repeat: int) -> tuple[float, object]:
    t, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        t = min(t, time.perf_counter() - t0)
    return t, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=100_000)
    ap.add_argument("--rules", type=int, default=50)
    ap.add_argument("--trees", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rules_path, trees_path = Path(tmp) / "bench.rules", Path(tmp) / "trees.rules"
        rules_path.write_text(bench_rule_text(args.rules), encoding="utf-8")
        trees_path.write_text(tree_text(args.trees, args.rules), encoding="utf-8")
        with_trees = load_rules([rules_path, trees_path])
    rules_only = with_trees.select(with_trees.ids)  # the same rules, projection and batch, no trees
    conn = duckdb.connect()
    build_batch(conn, with_trees, args.spans)
    # interleave so that both see the same machine state
    t_rules, t_trees = float("inf"), float("inf")
    findings, evaluation = [], None
    for _ in range(args.repeat):
        t, findings = best(lambda: rules_only.evaluate(conn, "batch"), 1)
        t_rules = min(t_rules, t)
        t, evaluation = best(lambda: with_trees.evaluate_all(conn, "batch"), 1)
        t_trees = min(t_trees, t)
    assert evaluation is not None
    fired = sum(o.fired for o in evaluation.trees)
    print(f"{len(rules_only)} rules over {args.spans} spans: best of {args.repeat}: {t_rules:.3f} s ({len(findings)} findings)")
    print(f"  + {len(with_trees.trees)} fault trees: {t_trees:.3f} s ({len(evaluation.trees)} tree verdicts, {fired} fired; "
          f"{len(with_trees.conditions)} span conditions)")
    print(f"  overhead: {100 * (t_trees - t_rules) / t_rules:+.1f}% (target <= 20%)")


if __name__ == "__main__":
    main()
