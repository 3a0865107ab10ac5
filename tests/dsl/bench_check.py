"""Benchmark (a script, not a test): ``faulttrace check`` on large and hostile
rule files.

    .venv/bin/python -m tests.dsl.bench_check [--size 1000000] [--repeat 3] [--only NAME ...]
        [--dsl DIR] [--timeout 600] [--command-only]

Writes the inputs to a temporary directory, then for each runs, in fresh
processes, ``faulttrace check FILE`` (the whole command, interpreter start
and imports included: ``--repeat`` times, best wall and CPU time, and its
peak resident memory) and ``dsl.cli_check`` alone (best of ``--repeat``
after a warm-up, in one process: the checking itself).  CPU time is what to
compare on a busy machine.  The target for ``library`` and ``dense`` (1 MB
with one error at the end) is <= 2 s.

Measured (``--repeat 3``, CPU of the whole command, three runs on the shared
2-core machine in a quiet hour, 2026-12-03, 6144e50): library 0.97-1.28 s,
library_syntax 1.05-1.16 s, dense 1.37-1.53 s, or10000 1.51 s; the commit
before dsl/lexer.py in the same hour 1.15-1.35, 1.18-1.29, 1.63-1.79 and
1.51 s; before issue #15's parser work (a126aa2, four runs under load)
2.5-3.7, 3.7-4.4, 3.5-5.0 and 2.5-3.8 s.

Inputs: ``library`` the built-in rules (rules/*.rules, ids renamed) repeated
to ``--size`` bytes, then a rule with an unknown field; ``library_syntax`` the
same ending with a syntax error; ``dense`` short synthetic rules (a few
conditions and two message holes each) to ``--size``, then an error;
``or10000`` one rule whose condition is a 10,000-term ``or`` chain;
``and10000`` the same with ``and``; ``not100000`` 100,000 nested ``not``s
(refused: E005); ``literal4mb`` a 4 MB string literal (refused: E006);
``literal5mb`` a 5 MB one (a file past the limit: E041).

``--dsl DIR`` measures another copy of the ``dsl`` package, e.g. an older
commit's (``git archive REV dsl | tar -x -C DIR``), for before/after figures;
``--command-only`` skips the in-process timing (for inputs that take minutes).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAD = '  title "{title}"\n  layer code\n  severity medium\n  confidence 0.5\n'
BAD = 'rule bench.bad {\n' + HEAD.format(title="bad") + '  match span e where e.durration > 1ms\n}\n'
BAD_SYNTAX = 'rule bench.bad {\n' + HEAD.format(title="bad") + '  match span e where e.duration >\n}\n'


def _library(size: int, last: str) -> str:
    """The built-in rules, ids renamed, repeated to ``size`` bytes, then ``last``."""
    common = (ROOT / "rules" / "common.rules").read_text(encoding="utf-8")
    files = ("code", "config", "data", "infrastructure", "semantic")
    body = "\n".join((ROOT / "rules" / f"{name}.rules").read_text(encoding="utf-8") for name in files)
    out, n = [common], 0
    while sum(map(len, out)) < size:
        out.append(re.sub(r"^rule ([a-z_.]+)", lambda m: f"rule {m.group(1)}_{n}", body, flags=re.M))
        n += 1
    return "".join(out) + last


def _dense(size: int) -> str:
    rule = ('rule bench.r{i} {{\n' + HEAD.format(title="Generated rule {i}") +
            '  match span e where e.status = error and e.duration > {i}ms and e.attr["http.route"] = "/r/{i}"\n'
            '  message "{{e.name}} took {{e.duration}}"\n}}\n')
    out, i = [], 0
    while sum(map(len, out)) < size:
        out.append(rule.format(i=i))
        i += 1
    return "".join(out) + BAD


def _one(where: str) -> str:
    return "rule bench.one {\n" + HEAD.format(title="one") + f"  match span e where {where}\n}}\n"


INPUTS: dict[str, Callable[[int], str]] = {
    "library": lambda size: _library(size, BAD),
    "library_syntax": lambda size: _library(size, BAD_SYNTAX),
    "dense": _dense,
    "or10000": lambda _: _one(" or ".join(f'e.name = "n{i}"' for i in range(10_000))),
    "and10000": lambda _: _one(" and ".join(f'e.name != "n{i}"' for i in range(10_000))),
    "not100000": lambda _: _one("not " * 100_000 + "e.is_root"),
    "literal4mb": lambda _: _one('e.name = "' + "x" * 4_000_000 + '"'),
    "literal5mb": lambda _: _one('e.name = "' + "x" * 5_000_000 + '"'),
}

# in a child process: time dsl.cli_check alone (after one warm-up run), print the best wall and CPU times
_IN_PROCESS = """
import io, sys, time
from dsl import cli_check
cli_check([sys.argv[1]], out=io.StringIO())
wall = cpu = float("inf")
for _ in range(int(sys.argv[2])):
    t0, c0 = time.perf_counter(), time.process_time()
    cli_check([sys.argv[1]], out=io.StringIO())
    wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
print(wall, cpu)
"""


def _command(path: Path, cwd: Path, env: dict[str, str], timeout: float) -> tuple[float, float, int, str]:
    """Wall time, CPU time, peak resident memory (KiB) and what it said (its
    first line, or the last of a traceback) of one ``faulttrace check`` run."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        # `-m processor.cli` is the `faulttrace` command; run from `cwd`, it imports the dsl found there first
        proc = subprocess.Popen([sys.executable, "-m", "processor.cli", "check", str(path)], cwd=cwd, env=env,
                                stdout=out, stderr=out)
        deadline = t0 + timeout
        while True:
            pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = 0  # reaped here: keep Popen from waiting again
                break
            if time.perf_counter() > deadline:
                proc.kill()
                proc.wait()
                return float("inf"), float("inf"), 0, "(timed out)"
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        out.seek(0)
        lines = out.read().strip().splitlines() or [""]
    said = lines[-1] if any(line.startswith("Traceback") for line in lines) else lines[0]
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, said[:90]


def _in_process(path: Path, cwd: Path, env: dict[str, str], repeat: int, timeout: float) -> tuple[float, float]:
    """Best wall and CPU time of ``cli_check`` alone (nan if it failed)."""
    try:
        child = subprocess.run([sys.executable, "-c", _IN_PROCESS, str(path), str(repeat)], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=timeout * (repeat + 1))
    except subprocess.TimeoutExpired:
        return float("inf"), float("inf")
    if child.returncode != 0:
        return float("nan"), float("nan")
    wall, cpu = child.stdout.split()
    return float(wall), float(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1_000_000, help="bytes of the large files")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="+", choices=list(INPUTS), default=list(INPUTS))
    ap.add_argument("--dsl", type=Path, default=ROOT, help="directory holding the dsl package to measure")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run before giving up")
    ap.add_argument("--command-only", action="store_true", help="time only the whole command")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(args.dsl), str(ROOT)])}
    print(f"{'':<26} {'faulttrace check':^28} {'cli_check':^17}")
    print(f"{'input':<15} {'bytes':>10} {'wall':>8} {'cpu':>8} {'peak RSS':>10} {'wall':>8} {'cpu':>8}  output")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            path = Path(tmp) / f"{name}.rules"
            path.write_text(INPUTS[name](args.size), encoding="utf-8")
            runs = [_command(path, args.dsl, env, args.timeout) for _ in range(args.repeat)]
            wall, cpu, rss = min(r[0] for r in runs), min(r[1] for r in runs), max(r[2] for r in runs)
            inner = (float("nan"),) * 2 if args.command_only else _in_process(path, args.dsl, env, args.repeat, args.timeout)
            print(f"{name:<15} {path.stat().st_size:>10,} {wall:>7.2f}s {cpu:>7.2f}s {rss / 1024:>7.0f} MB "
                  f"{inner[0]:>7.2f}s {inner[1]:>7.2f}s  {runs[-1][3].replace(tmp + '/', '')}", flush=True)


if __name__ == "__main__":
    main()
