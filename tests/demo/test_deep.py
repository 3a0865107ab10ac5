"""``faulttrace demo --write-dataset --topology deep``: the deep system has the shape asked of it
(services, depth, fan-out, hubs, pods over nodes), the same seed writes the same bytes, and every
label names spans of its own case."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.cli import main
from processor.demo import deep
from processor.otlp.tracefile import read_requests
from processor.tools.evaluation import Dataset

SMALL = {"traces_per_case": 12, "cases_per_kind": 1, "baseline_traces": 60}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deep") / "ds"
    deep.write_dataset(out, seed=3, **SMALL)
    return out


def _spans(path: Path) -> list[tuple[bytes, Span, dict[str, str]]]:
    """(trace id, span, resource attributes as strings) of every span in a trace file."""
    out = []
    for req in read_requests(path):
        for rs in req.resource_spans:
            res = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                out += [(span.trace_id, span, res) for span in ss.spans]
    return out


def test_same_seed_same_bytes_other_seed_other_traces(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    deep.write_dataset(again, seed=3, **SMALL)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((dataset / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = tmp_path / "other"
    deep.write_dataset(other, seed=4, **SMALL)
    assert (other / "baseline" / "traces.jsonl.gz").read_bytes() != (dataset / "baseline" / "traces.jsonl.gz").read_bytes()


def test_shape_services_depth_fan_out_parallel_and_pods_over_nodes(dataset: Path) -> None:
    spans = _spans(dataset / "baseline" / "traces.jsonl.gz")
    by_id = {(t, s.span_id): (s, res) for t, s, res in spans}
    services = {res["service.name"] for _, _, res in spans}
    assert len(services) >= 25
    # depth in services: distinct service changes from a root down to a span
    depth = 0
    for t, s, res in spans:
        chain, node = [res["service.name"]], s
        while node.parent_span_id:
            node, r = by_id[(t, node.parent_span_id)]
            if r["service.name"] != chain[-1]:
                chain.append(r["service.name"])
        depth = max(depth, len(chain))
    assert depth >= 6
    # fan-out: a server span calling four services whose client spans overlap in time (parallel)
    kids: dict[tuple[bytes, bytes], list[Span]] = defaultdict(list)
    for t, s, _ in spans:
        kids[(t, s.parent_span_id)].append(s)
    parallel = max(sum(1 for c in cs if c.kind == Span.SPAN_KIND_CLIENT
                       and any(o is not c and o.kind == Span.SPAN_KIND_CLIENT
                               and o.start_time_unix_nano < c.end_time_unix_nano
                               and c.start_time_unix_nano < o.end_time_unix_nano for o in cs)) for cs in kids.values())
    assert parallel >= 4
    sequential = any(sum(1 for c in cs if c.kind == Span.SPAN_KIND_CLIENT) >= 2
                     and all(a.end_time_unix_nano <= b.start_time_unix_nano for a, b in zip(
                         sorted(cs, key=lambda c: c.start_time_unix_nano),
                         sorted(cs, key=lambda c: c.start_time_unix_nano)[1:], strict=False))
                     for cs in kids.values())
    assert sequential
    # pods over nodes, as resource attributes
    nodes = {res["k8s.node.name"] for _, _, res in spans}
    assert len(nodes) >= 4 and all(res["host.name"] == res["k8s.node.name"] for _, _, res in spans)
    assert all(res["k8s.pod.name"].startswith(res["service.name"] + "-") for _, _, res in spans)


def test_hubs_are_reached_by_most_requests_and_heavy_tailed(dataset: Path) -> None:
    spans = _spans(dataset / "baseline" / "traces.jsonl.gz")
    traces = {t for t, _, _ in spans}
    reached: dict[str, set[bytes]] = defaultdict(set)
    times: dict[str, list[float]] = defaultdict(list)
    for t, s, res in spans:
        if s.kind == Span.SPAN_KIND_SERVER:
            reached[res["service.name"]].add(t)
            times[res["service.name"]].append((s.end_time_unix_nano - s.start_time_unix_nano) / 1e6)
    hubs = [svc for svc, ts in reached.items() if svc != "edge" and svc != "session" and len(ts) >= 0.6 * len(traces)]
    assert len(hubs) >= 2
    tailed = [h for h in hubs if max(times[h]) >= 8 * statistics.median(times[h])]
    assert len(tailed) >= 2, {h: (statistics.median(times[h]), max(times[h])) for h in hubs}


def test_labels_name_spans_of_their_own_case(dataset: Path) -> None:
    kinds = set()
    for case in sorted((dataset / "cases").iterdir()):
        label = json.loads((case / "label.json").read_text())
        rc = label["root_cause"]
        kinds.add(rc["fault"])
        spans = {s.span_id.hex(): (s, res) for _, s, res in _spans(case / "traces.jsonl.gz")}
        assert rc["span_ids"] and label["affected_traces"] > 0, case.name
        assert set(rc["span_ids"]) <= set(spans), case.name
        assert set(label["symptom_span_ids"]) <= set(spans), case.name
        assert not set(rc["span_ids"]) & set(label["symptom_span_ids"])
        if rc["fault"] == "network-delay":
            # the wire time: client spans of calls into or out of the delayed pod
            for sid in rc["span_ids"]:
                s, res = spans[sid]
                assert s.kind == Span.SPAN_KIND_CLIENT
        else:  # the injected pod's own spans
            assert {spans[sid][1]["k8s.pod.name"] for sid in rc["span_ids"]} == {rc["pod"]}, case.name
        if rc["fault"] == "cpu-contention":
            assert all(spans[sid][1]["k8s.node.name"] == rc["node"] for sid in rc["span_ids"])
    assert kinds == {k.name for k in deep.KINDS}
    assert Dataset.load(dataset).span_labelled


def test_cli_writes_the_deep_topology_and_refuses_unknown_kinds(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["demo", "--write-dataset", str(out), "--topology", "deep", "--fault", "slow-leaf",
                 "--traces-per-case", "6", "--cases-per-kind", "1", "--baseline-traces", "10"]) == 0
    assert [p.name for p in (out / "cases").iterdir()] == ["slow-leaf-1"]
    assert main(["demo", "--write-dataset", str(out), "--topology", "deep", "--fault", "zero-rows"]) == 2
    assert "unknown fault kind zero-rows" in capsys.readouterr().err
    assert main(["demo", "--topology", "deep"]) == 2
