"""The ``faulttrace`` command line: a thin layer over config, pipeline and tools."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

# processor.config (pydantic models importing every component) is imported by the commands that read a
# configuration, not here: `faulttrace check` would spend more time importing it than checking a file
if TYPE_CHECKING:
    from processor.config import Config
    from processor.demo.faults import FaultKind
    from processor.tools.offline import OfflineResult

log = logging.getLogger("faulttrace")


def _setup_logging(level: str = "info") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _serve(config: Config) -> None:
    """Run until SIGINT/SIGTERM; a failed start raises StartError once what had started is stopped."""
    import asyncio

    from processor.pipeline import Pipeline
    from processor.service.process import tune_process

    tune_process()
    pipeline = Pipeline(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await pipeline.start()
    log.info("faulttrace is running (%s); Ctrl-C to stop",
             ", ".join(f"{k}={v}" for k, v in pipeline.ports().items()))
    await stop.wait()
    log.info("shutting down: exporting buffered traces (at most %.0fs)", config.service.shutdown_timeout)
    await pipeline.stop()
    log.info("stopped")


def cmd_serve(args: argparse.Namespace) -> int:
    # asyncio, like the pipeline, only where a command runs one (``check`` starts in ~0.5 s)
    import asyncio

    from processor.config import OTEL_PREFIX, load_config
    from processor.pipeline import StartError
    from processor.store import JournalError

    ports = {"grpc": args.grpc_port, "http": args.http_port, "metrics": args.metrics_port}
    config = load_config(args.config, args.set or (), ports)
    _setup_logging(config.service.telemetry.logs.level)
    if args.config is not None:
        ignored = sorted(k for k in os.environ if k.startswith(OTEL_PREFIX) and os.environ[k].strip())
        if ignored:
            log.warning("%s ignored: --config names the exporters", ", ".join(ignored))
    try:
        asyncio.run(_serve(config))
    except (StartError, JournalError) as err:
        # One line, e.g. "receivers.otlp.protocols.http: cannot listen on …"; exit 1 for any
        # failure to start, as the collector does (2 is for a configuration that is invalid).
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """``baseline export FILE`` / ``baseline import FILE``: the configured instance's baseline snapshot."""
    from pathlib import Path

    import duckdb

    from processor.config import load_config
    from processor.localizer.history import HistoryConfig
    from processor.localizer.snapshot import SnapshotError, copy_snapshot, scale_of, snapshot_path

    config = load_config(args.config, args.set or ())
    journal = config.processor.storage.journal
    if journal is None:
        print("error: processors.faulttrace.storage.path is \":memory:\": such an instance keeps no baseline "
              "snapshot; give it a file", file=sys.stderr)
        return 1
    snapshot, file = snapshot_path(journal), Path(args.file)
    try:
        if args.action == "export":
            meta = copy_snapshot(snapshot, file, scale_of(HistoryConfig()))
        else:
            if Path(journal).exists():  # a running instance holds its journal; at stop it would overwrite
                try:
                    duckdb.connect(journal, read_only=True).close()
                except duckdb.Error:
                    print(f"error: the instance of {journal} is running: stop it, import, then start it",
                          file=sys.stderr)
                    return 1
            meta = copy_snapshot(file, snapshot, scale_of(HistoryConfig()))
    except (SnapshotError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    source, target = (snapshot, file) if args.action == "export" else (file, snapshot)
    print(f"{source} -> {target}: a baseline learned from {int(meta.get('traces_seen', 0)):,} traces")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from processor.config import load_config

    config = load_config(args.config, args.set or ())
    p = config.pipeline
    print(f"{args.config}: valid (receivers: {', '.join(p.receivers)}; processors: "
          f"{', '.join(p.processors) or '-'}; exporters: {', '.join(p.exporters)})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from dsl import cli_check
    from dsl.api import cli_explain_tree

    if args.explain:
        return cli_explain_tree(args.paths, args.explain)
    if args.baseline:
        from processor.tools.firingrate import cli_check_baseline

        return cli_check_baseline(args.paths, args.baseline, args.format, args.max_rate, sys.stdout)
    return cli_check(args.paths, args.format)


def cmd_test(args: argparse.Namespace) -> int:
    from processor.tools.ruletest import run_fixture_tests

    return run_fixture_tests(args.paths, sys.stdout)


def cmd_explain(args: argparse.Namespace) -> int:
    from dsl import RuleError, load_rules
    from processor.analysis.build import rule_paths
    from processor.config import FaulttraceProcessorConfig
    from processor.otlp.tracefile import TraceFileError, read_requests
    from processor.tools import explain
    from processor.tools.offline import analyze

    paths = rule_paths(FaulttraceProcessorConfig(builtin_rules=not args.no_builtin_rules, rules=args.rules or []))
    try:
        rules = load_rules(paths)
        requests = read_requests(args.file)
    except (RuleError, TraceFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    localizer = None
    if not args.no_localizer:
        from processor.localizer import LocalizerAnalyzer

        try:
            localizer = LocalizerAnalyzer(args.baseline)
        except (OSError, ValueError) as err:
            print(f"error: --baseline {args.baseline}: {err}", file=sys.stderr)
            return 2
    try:
        result = analyze(requests, rules, localizer)
    finally:
        if localizer is not None:
            localizer.close()
    summary = explain.summary_line(result)
    if args.html:
        return _explain_html(result, args.html, args.file, summary)
    if args.failed:
        result = explain.failed_only(result)
    if args.format == "json":
        print(explain.dumps(result))
    else:
        print(summary + ("; only those are shown (--failed)" if args.failed else ""))
        explain.write_text(result, sys.stdout)
        if localizer is not None and localizer.contrast:
            print("why not first:\n" + "".join(f"  {line}\n" for line in localizer.contrast), end="")
    return 0


def _explain_html(result: OfflineResult, out: str, source: str, summary: str) -> int:
    """``explain --html OUT``: the page for incident review (``tools.htmlpage``), one line on stdout."""
    from pathlib import Path

    from processor.tools.htmlpage import write_html

    try:
        shown = write_html(result, Path(out), Path(source).name)
    except OSError as err:
        print(f"error: --html {out}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"{summary}; {out}: {shown} trace{'s' if shown != 1 else ''} with a root cause")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dsl import RuleError, load_rules
    from processor.analysis.build import rule_paths
    from processor.config import FaulttraceProcessorConfig
    from processor.localizer import SOURCES
    from processor.otlp.tracefile import TraceFileError
    from processor.tools.evaluation import DatasetError, run
    from processor.tools.replay import ReplayError

    if args.live and args.from_export:
        print("error: --live replays the cases itself; it does not read --from-export", file=sys.stderr)
        return 2
    if args.healthy:
        return _eval_healthy(args)
    paths = rule_paths(FaulttraceProcessorConfig(builtin_rules=not args.no_builtin_rules, rules=args.rules or []))
    try:
        return run(args.dataset, args.format, sys.stdout, [s for s in SOURCES if s not in (args.without or [])],
                   lambda: load_rules(paths), args.from_export or (), (args.rules or []) if args.live else None,
                   not args.no_builtin_rules)
    except (DatasetError, RuleError, TraceFileError, ReplayError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _eval_healthy(args: argparse.Namespace) -> int:
    """``eval DATASET --healthy FILE``: the share of FILE's fault-free traces the running pipeline,
    seeded with DATASET's baseline (``--cold``: none), tags with a root cause."""
    import json

    from processor.otlp.tracefile import TraceFileError
    from processor.tools import falsealarms
    from processor.tools.evaluation import TRACES, Dataset, DatasetError
    from processor.tools.replay import ReplayError

    try:
        seed = None if args.cold else Dataset.load(args.dataset, need_cases=False).baseline
        if seed is None and not args.cold:
            raise DatasetError(f"{args.dataset}: no baseline/{TRACES} to seed the pipeline with (--cold: none)")
        r = falsealarms.replay_healthy(args.healthy, seed, args.pace, tuple(args.rules or ()),
                                       not args.no_builtin_rules)
    except (DatasetError, TraceFileError, ReplayError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(r.to_json(), indent=2))
    else:
        falsealarms.write_text(r, args.healthy, sys.stdout)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from processor.tools.bench import run_bench

    return run_bench(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from processor.demo import deep, faults, writer

    if args.topology == "deep":
        if args.write_dataset is None:
            print("error: --topology deep writes a dataset: add --write-dataset DIR", file=sys.stderr)
            return 2
        return _write_dataset(args, deep.kinds_named, deep.write_dataset)
    if args.write_dataset is None:
        try:
            kinds = faults.kinds_named(args.fault or ())
        except ValueError as err:
            print(f"error: --fault: {err}", file=sys.stderr)
            return 2
        return _live_demo(args, kinds)
    return _write_dataset(args, faults.kinds_named, writer.write_dataset)


def _write_dataset(args: argparse.Namespace, kinds_named: Callable[[Sequence[str]], Sequence[Any]],
                   write: Callable[..., Any]) -> int:
    """``--write-dataset DIR``: a topology's labelled dataset (the shop's ``processor.demo.writer``,
    the deep system's ``processor.demo.deep``)."""
    import time

    try:
        kinds = tuple(kinds_named(args.fault or ()))
    except ValueError as err:
        print(f"error: --fault: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        w = write(args.write_dataset, seed=args.seed, traces_per_case=args.traces_per_case,
                  cases_per_kind=args.cases_per_kind, baseline_traces=args.baseline_traces, kinds=kinds)
    except OSError as err:
        print(f"error: {args.write_dataset}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"{w.path}: {w.cases} cases, {w.traces} traces ({w.affected} affected by their fault), {w.spans} spans "
          f"in {time.perf_counter() - started:.1f}s; score with `faulttrace eval {w.path}`")
    return 0


def _live_demo(args: argparse.Namespace, kinds: list[FaultKind]) -> int:
    import asyncio
    from pathlib import Path

    from processor.demo import live
    from processor.pipeline import StartError
    from processor.tools.replay import ReplayError

    try:
        return asyncio.run(live.run(args.seconds, kinds, Path(args.out).resolve(), args.seed, sys.stdout))
    except (StartError, ReplayError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="set a key of the configuration, as otelcol --set: a dotted path, the value read as "
                             "YAML (e.g. --set processors.faulttrace.decision_wait=2s); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faulttrace",
                                     description="Root-cause localizer for OpenTelemetry traces.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the pipeline (OTLP in, annotated OTLP out)")
    serve.add_argument("--config", help="collector-shaped YAML file (default: embedded defaults, with the "
                                        "OTEL_EXPORTER_OTLP_* variables naming the exporter)")
    _set_argument(serve)
    for flag, default in (("--grpc-port", 4317), ("--http-port", 4318), ("--metrics-port", 8888)):
        serve.add_argument(flag, type=int, metavar="PORT",
                           help=f"listen on PORT instead of the configured port ({default} by default), same host")
    serve.set_defaults(func=cmd_serve)

    baseline = sub.add_parser("baseline", help="export or import the localizer's learned baseline (with storage.path)")
    baseline.add_argument("action", choices=["export", "import"],
                          help="export: copy the instance's snapshot to FILE; import: install FILE as its snapshot "
                               "(the instance stopped), to start a new instance warm")
    baseline.add_argument("file", metavar="FILE")
    baseline.add_argument("--config", help="the instance's YAML file (its processors.faulttrace.storage.path)")
    _set_argument(baseline)
    baseline.set_defaults(func=cmd_baseline)

    validate = sub.add_parser("validate", help="check a configuration file and exit")
    validate.add_argument("--config", required=True)
    _set_argument(validate)
    validate.set_defaults(func=cmd_validate)

    check = sub.add_parser("check", help="compile rule files and print diagnostics (exit 1 on errors)")
    check.add_argument("paths", nargs="+", metavar="PATH", help="rule files or directories")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.add_argument("--explain", metavar="TREE_ID",
                       help="print a fault tree, its minimal cut sets and the importance of its basic events")
    check.add_argument("--baseline", metavar="FILE",
                       help="fault-free traces (OTLP/JSON, JSON lines, gzip): print the share of traces and spans "
                            "each rule and tree fires on, warning (W020, W021) above --max-rate")
    check.add_argument("--max-rate", type=float, default=0.01, metavar="RATE",
                       help="with --baseline: the share of fault-free traces a rule or tree may fire on (default 0.01)")
    check.set_defaults(func=cmd_check)

    test = sub.add_parser("test", help="run rule fixture tests (*.test.yaml)")
    test.add_argument("paths", nargs="+", metavar="PATH", help="fixture files or directories")
    test.set_defaults(func=cmd_test)

    explain = sub.add_parser("explain", help="localize root causes in recorded traces (OTLP/JSON, JSON lines, gzip)")
    explain.add_argument("file", metavar="FILE")
    # One PATH per --rules (repeatable): with nargs="+" `explain --rules x.rules FILE` would take FILE as a rule path.
    explain.add_argument("--rules", action="append", metavar="PATH",
                         help="rule file, directory or glob besides the built-in library (repeatable)")
    explain.add_argument("--no-builtin-rules", action="store_true", help="use only the --rules given")
    explain.add_argument("--baseline", metavar="FILE",
                         help="normal traffic (OTLP/JSON lines) to judge timing and call shapes against")
    explain.add_argument("--no-localizer", action="store_true", help="rules and fault trees only")
    explain.add_argument("--format", choices=["text", "json"], default="text")
    explain.add_argument("--html", metavar="OUT.html",
                         help="write one self-contained page instead: each trace with a root cause as a waterfall "
                              "(cause, symptoms and the chain marked, evidence beside them) and the service ranking")
    explain.add_argument("--failed", action="store_true",
                         help="only the traces given a root cause (the summary line still counts every trace)")
    explain.set_defaults(func=cmd_explain)

    evaluate = sub.add_parser("eval", help="root-cause accuracy (AC@k) on a labelled dataset")
    evaluate.add_argument("dataset", metavar="DATASET", help="dataset folder (dataset.json, baseline/, cases/)")
    evaluate.add_argument("--format", choices=["text", "json"], default="text")
    evaluate.add_argument("--without", action="append", metavar="SOURCE",
                          choices=["latency", "explain_away", "shape", "errors", "peers", "wire_time", "colocation",
                                   "hub_discount", "silent", "causal_past", "lift"],
                          help="leave out an evidence source of the localizer (repeatable; for ablation): "
                               "silent abnormality, the causal past, the lift are the causal model's parts; "
                               "wire_time, colocation, hub_discount the delay pieces (docs/localization.md)")
    evaluate.add_argument("--rules", action="append", metavar="PATH",
                          help="rule file, directory or glob besides the built-in library (repeatable)")
    evaluate.add_argument("--no-builtin-rules", action="store_true", help="use only the --rules given")
    evaluate.add_argument("--from-export", action="append", metavar="FILE",
                          help="score the spans `faulttrace serve` exported (file exporter) after the cases "
                               "were replayed into it, instead of analyzing in process (repeatable)")
    evaluate.add_argument("--live", action="store_true",
                          help="also replay each case through a running pipeline (receiver, batching, online "
                               "learning, annotation, file exporter) and score the spans that come out; "
                               "printed after the offline figures, then both side by side (--without applies "
                               "to the offline analysis only)")
    evaluate.add_argument("--healthy", metavar="FILE",
                          help="instead of the cases: replay this fault-free traffic through a running pipeline "
                               "seeded with the dataset's baseline and report the share of its traces tagged "
                               "with rca.root_cause (false alarms)")
    evaluate.add_argument("--pace", type=float, default=0.0, metavar="SECONDS",
                          help="with --healthy: seconds between requests (default 0: as fast as accepted)")
    evaluate.add_argument("--cold", action="store_true", help="with --healthy: no seed baseline")
    evaluate.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="measure throughput and memory of the whole pipeline")
    bench.add_argument("--seconds", type=float, default=10.0, help="load duration per run (default 10)")
    bench.add_argument("--runs", type=int, default=3, help="alternating runs of each mode; medians reported")
    bench.add_argument("--senders", type=int, default=2, help="concurrent client streams in the load process")
    bench.add_argument("--decision-wait", default="1s")
    bench.add_argument("--compression", choices=["none", "gzip"], default="none",
                       help="exporter compression in both modes (default none: loopback)")
    bench.add_argument("--rules", nargs="+", metavar="PATH",
                       help="rule files for the 'rules' mode, besides the built-in library")
    bench.add_argument("--storage", choices=["memory", "journal"], default="memory",
                       help="where the store keeps spans: in memory (default, comparable with earlier figures) "
                            "or journaled to a DuckDB file as `serve` does by default")
    bench.add_argument("--modes", nargs="+", choices=["pipeline", "rules", "full", "passthrough", "rotel"],
                       default=["pipeline", "rules", "full", "passthrough"],
                       help="modes to run (default all but rotel: a Rust collector's passthrough, "
                            "pip install rotel); ratios need their reference mode")
    bench.add_argument("--complete-grace", default=None, metavar="DURATION",
                       help="processors.faulttrace.complete_grace of the server (default: its default)")
    bench.add_argument("--format", choices=["text", "json"], default="text")
    bench.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="run the pipeline on a simulated shop under faults and print each root "
                                        "cause; or write a labelled dataset (--write-dataset)")
    demo.add_argument("--seconds", type=float, default=30.0,
                      help="how long the faults' traffic lasts (default 30; each fault gets an equal share, "
                           "at least 1 s)")
    demo.add_argument("--fault", action="append", metavar="KIND",
                      help="a fault kind to inject (repeatable; default every kind, one layer after another); "
                           "with --write-dataset, the kinds to write cases of")
    demo.add_argument("--out", default="faulttrace-demo.jsonl", metavar="FILE",
                      help="where the file exporter writes the annotated spans, OTLP/JSON lines (default "
                           "./faulttrace-demo.jsonl, overwritten)")
    demo.add_argument("--write-dataset", metavar="DIR",
                      help="instead: write a labelled dataset to DIR (dataset.json, baseline/, "
                           "cases/<id>/{traces.jsonl.gz,label.json})")
    demo.add_argument("--seed", type=int, default=1, help="same seed, same traffic (default 1)")
    demo.add_argument("--traces-per-case", type=int, default=40, metavar="N", help="--write-dataset: default 40")
    demo.add_argument("--cases-per-kind", type=int, default=2, metavar="N",
                      help="--write-dataset: cases of each fault kind, each another variant where there are "
                           "several (default 2)")
    demo.add_argument("--baseline-traces", type=int, default=400, metavar="N",
                      help="--write-dataset: fault-free traces (default 400)")
    demo.add_argument("--topology", choices=("shop", "deep"), default="shop",
                      help="--write-dataset: the simulated system: the shop (default) or a deep call graph of "
                           "28 services with hubs, pods over six nodes and delay faults")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `faulttrace explain … | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except Exception as err:
        confmap = sys.modules.get("processor.confmap")  # not imported by the command: no ConfigError raised
        if confmap is None or not isinstance(err, confmap.ConfigError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
