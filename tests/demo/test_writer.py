"""``faulttrace demo --write-dataset``: the dataset's layout and labels hold, the same seed writes the
same bytes, and ``faulttrace eval`` reads it."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from processor.cli import main
from processor.demo import KINDS, write_dataset
from processor.demo.faults import LAYERS
from processor.otlp.tracefile import read_requests
from processor.tools.evaluation import Dataset

SMALL = {"traces_per_case": 16, "cases_per_kind": 1, "baseline_traces": 40}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "ds"
    write_dataset(out, seed=7, **SMALL)
    return out


def spans_of(path: Path) -> dict[str, tuple[bytes, Span, str]]:
    """span id (hex) -> (trace id, span, service.name) of every span in a trace file."""
    out = {}
    for req in read_requests(path):
        for rs in req.resource_spans:
            service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out[span.span_id.hex()] = (span.trace_id, span, service)
    return out


def labels(root: Path) -> dict[str, dict[str, Any]]:
    return {d.name: json.loads((d / "label.json").read_text()) for d in sorted((root / "cases").iterdir())}


def test_same_seed_same_bytes_other_seed_other_traces(tmp_path: Path, dataset: Path) -> None:
    again = tmp_path / "again"
    write_dataset(again, seed=7, **SMALL)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:
        assert (dataset / f).read_bytes() == (again / f).read_bytes(), f
    other = tmp_path / "other"
    write_dataset(other, seed=8, **SMALL)
    assert (other / "baseline/traces.jsonl.gz").read_bytes() != (dataset / "baseline/traces.jsonl.gz").read_bytes()


def test_layout_and_metadata(dataset: Path) -> None:
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["level"] == "span" and meta["cases"] == len(KINDS)
    assert (dataset / "baseline/traces.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    for case in (dataset / "cases").iterdir():
        assert sorted(p.name for p in case.iterdir()) == ["label.json", "traces.jsonl.gz"]
        lab = json.loads((case / "label.json").read_text())
        rc = lab["root_cause"]
        assert {"service", "fault", "layer", "span_ids"} <= rc.keys()
        assert rc["layer"] in LAYERS
        assert isinstance(lab["inject_time_unix_nano"], int) and isinstance(lab["symptom_span_ids"], list)
    assert len(read_requests(dataset / "baseline/traces.jsonl.gz")) == SMALL["baseline_traces"]


def test_every_kind_appears_over_every_layer_half_of_them_silent(dataset: Path) -> None:
    faults = {lab["root_cause"]["fault"] for lab in labels(dataset).values()}
    assert faults == {k.name for k in KINDS}
    assert len(KINDS) >= 16
    assert {k.layer for k in KINDS} == set(LAYERS)
    assert 2 * sum(k.silent for k in KINDS) >= len(KINDS)
    assert all(len(k.variants) >= 2 for k in KINDS)


def test_labels_name_spans_of_the_case_causes_in_every_affected_trace(dataset: Path) -> None:
    for case, lab in labels(dataset).items():
        spans = spans_of(dataset / "cases" / case / "traces.jsonl.gz")
        causes, symptoms = lab["root_cause"]["span_ids"], lab["symptom_span_ids"]
        assert causes, f"{case}: no trace affected"
        assert set(causes) <= spans.keys() and set(symptoms) <= spans.keys(), case
        assert not set(causes) & set(symptoms), case
        assert len(set(causes)) == len(causes) and len(set(symptoms)) == len(symptoms), case
        cause_traces = {spans[s][0] for s in causes}
        # a trace showing a symptom holds a cause of it; the label counts the traces with causes
        assert {spans[s][0] for s in symptoms} <= cause_traces, case
        assert lab["affected_traces"] == len(cause_traces) < lab["traces"], case
        # the service of the label is where (most of) the causes are
        assert lab["root_cause"]["service"] in {spans[s][2] for s in causes}, case


def test_silent_causes_raise_nothing_and_something_later_fails(dataset: Path) -> None:
    silent = {k.name for k in KINDS if k.silent}
    for case, lab in labels(dataset).items():
        if lab["root_cause"]["fault"] not in silent:
            continue
        spans = spans_of(dataset / "cases" / case / "traces.jsonl.gz")
        by_trace: dict[bytes, list[Span]] = defaultdict(list)
        for s in lab["symptom_span_ids"]:
            by_trace[spans[s][0]].append(spans[s][1])
        for s in lab["root_cause"]["span_ids"]:
            trace_id, span, _ = spans[s]
            assert span.status.code != Status.STATUS_CODE_ERROR, (case, span.name)
            assert not [e for e in span.events if e.name == "exception"], (case, span.name)
            # the failure it leads to: an exception a symptom span raises after the cause ended (a 404
            # answered for data that is there raises nothing)
            later = [x for x in by_trace[trace_id] for e in x.events
                     if e.name == "exception" and e.time_unix_nano >= span.end_time_unix_nano]
            answered_404 = any(x.kind == Span.SPAN_KIND_SERVER and not x.parent_span_id and any(
                a.key == "http.response.status_code" and a.value.int_value == 404 for a in x.attributes)
                for x in by_trace[trace_id])
            assert later or answered_404, (case, span.name)


def test_loud_causes_show_an_error_or_a_delay(dataset: Path) -> None:
    for case, lab in labels(dataset).items():
        if lab["root_cause"]["silent"]:
            continue
        spans = spans_of(dataset / "cases" / case / "traces.jsonl.gz")
        for s in lab["root_cause"]["span_ids"]:
            span = spans[s][1]
            erred = span.status.code == Status.STATUS_CODE_ERROR
            assert erred or lab["root_cause"]["fault"] in ("slow-query", "cpu-throttling", "network-latency"), case


def test_eval_reads_it(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = Dataset.load(dataset)
    assert ds.baseline is not None and len(ds.cases) == len(KINDS)
    assert all(c.span_ids for c in ds.cases)
    assert main(["eval", str(dataset), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["cases"] == len(KINDS)


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["demo", "--write-dataset", str(out), "--seed", "3", "--traces-per-case", "5",
                 "--cases-per-kind", "1", "--baseline-traces", "10"]) == 0
    assert f"{len(KINDS)} cases" in capsys.readouterr().out
    assert len(list((out / "cases").iterdir())) == len(KINDS)


def test_children_run_within_their_parents(dataset: Path) -> None:
    """Simulated time nests: a child starts after its parent and ends before it, except a callee still
    running after its client gave up (a timeout)."""
    for path in [dataset / "baseline/traces.jsonl.gz", *(dataset / "cases").glob("*/traces.jsonl.gz")]:
        spans = {s: span for s, (_, span, _) in spans_of(path).items()}
        for span in spans.values():
            parent = spans.get(span.parent_span_id.hex())
            if parent is None:
                assert not span.parent_span_id, path
                continue
            assert parent.start_time_unix_nano <= span.start_time_unix_nano < span.end_time_unix_nano, path
            cancelled = parent.kind == Span.SPAN_KIND_CLIENT and not any(
                a.key in ("http.response.status_code", "rpc.grpc.status_code") for a in parent.attributes)
            assert span.end_time_unix_nano <= parent.end_time_unix_nano or cancelled, (path, span.name)


def test_the_docs_list_every_kind_with_its_layer() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "demo.md").read_text()
    for k in KINDS:
        assert f"| `{k.name}` | {k.layer} | {'silent' if k.silent else 'loud'} |" in doc, k.name


def test_cpu_throttling_labels_the_throttled_container_and_only_its_spans(dataset: Path) -> None:
    """CFS throttling is one container's quota: the label names the injected pod, every cause span
    is that pod's, and the spans of its node's other pods are not slowed (their self time stays
    what it is in healthy traffic)."""
    case = next(c for c, lab in labels(dataset).items() if lab["root_cause"]["fault"] == "cpu-throttling")
    lab = labels(dataset)[case]["root_cause"]
    assert lab["service"] == lab["target"] and "node" not in lab
    pods: dict[str, str] = {}
    for req in read_requests(dataset / "cases" / case / "traces.jsonl.gz"):
        for rs in req.resource_spans:
            pod = next(a.value.string_value for a in rs.resource.attributes if a.key == "k8s.pod.name")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    pods[span.span_id.hex()] = pod
    assert lab["span_ids"] and {pods[s] for s in lab["span_ids"]} == {lab["pod"]}
    # every span of the throttled pod in an affected trace does its work slowed, so is a cause
    spans = spans_of(dataset / "cases" / case / "traces.jsonl.gz")
    affected = {spans[s][0] for s in lab["span_ids"]}
    on_pod = {s for s, (t, span, _) in spans.items() if t in affected and pods[s] == lab["pod"]
              and span.kind != Span.SPAN_KIND_CLIENT}
    assert on_pod <= set(lab["span_ids"])
