"""examples/nezha/convert.py on a small Nezha-shaped clone written here (Nezha's columns and file
layout; rows made up for the test): the dataset it writes is what ``faulttrace eval`` reads."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from processor.otlp.tracefile import read_requests
from processor.tools.evaluation import Dataset

ROOT = Path(__file__).resolve().parents[2]
PODS = {"frontend": "frontend-579b9bff58-t2dbm", "cartservice": "cartservice-579f59597d-wc2lz",
        "currencyservice": "currencyservice-cf787dd48-vpjrd"}
T0 = 1661140260_000_000_000  # 2022-08-22 03:51:00 UTC


def _converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nezha_convert", ROOT / "examples" / "nezha" / "convert.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rows(start_ns: int, traces: int, slow: str | None, seed: int) -> list[dict[str, str]]:
    """frontend -> cartservice and frontend -> currencyservice per trace; ``slow``'s span takes 400 ms more."""
    rows = []
    for t in range(traces):
        begin = start_ns + t * 1_000_000_000
        trace_id = f"{seed:04x}{t:012x}"  # 64-bit ids, as Jaeger writes them: the converter pads them
        root = f"{seed:02x}{t:06x}00000001"
        calls = []
        at = begin + 100_000
        for k, service in enumerate(("cartservice", "currencyservice"), start=2):
            duration = 5_000_000 + (t % 3) * 100_000 + (400_000_000 if service == slow else 0)
            calls.append({"TraceID": trace_id, "SpanID": f"{seed:02x}{t:06x}0000000{k}", "ParentID": root,
                          "PodName": PODS[service], "StartTimeUnixNano": str(at), "EndTimeUnixNano": str(at + duration),
                          "OperationName": f"hipstershop.{service}/Get", "Duration": str(duration)})
            at += duration + 50_000
        rows.append({"TraceID": trace_id, "SpanID": root, "ParentID": "root", "PodName": PODS["frontend"],
                     # as pandas may write a large integer: a float in exponent form (rounded up on reading)
                     "StartTimeUnixNano": f"{begin:.15e}", "EndTimeUnixNano": str(at + 100_000),
                     "OperationName": "hipstershop.Frontend/Recv.", "Duration": "0"})
        rows += calls
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A Nezha clone in miniature: a baseline minute, two faults of which one has its trace minute."""
    nezha = tmp_path / "Nezha"
    _write_csv(nezha / "construct_data" / "2022-08-22" / "trace" / "03_51_trace.csv", _rows(T0, 30, None, 1))
    faults = {"3": [{"inject_time": "2022-08-22 03:53:54", "inject_pod": PODS["cartservice"],
                     "inject_type": "cpu_contention"},
                    {"inject_time": "2022-08-22 03:58:00", "inject_pod": PODS["currencyservice"],
                     "inject_type": "network_delay"}]}
    fault_list = nezha / "rca_data" / "2022-08-22" / "2022-08-22-fault_list.json"
    fault_list.parent.mkdir(parents=True)
    fault_list.write_text(json.dumps(faults))
    # 03:53:54 + 2 minutes -> the 03:55 file; 04:00 (for 03:58) is absent.
    _write_csv(nezha / "rca_data" / "2022-08-22" / "trace" / "03_55_trace.csv",
               _rows(T0 + 240_000_000_000, 20, "cartservice", 2))
    (nezha / "construct_data" / "root_cause_hipster.json").write_text(
        json.dumps({"cartservice": {"cpu_contention": "CpuUsageRate(%)"}}))
    return nezha


def _convert(convert: ModuleType, clone: Path, out: Path, *extra: str) -> int:
    return convert.main([str(clone), str(out), "--dates", "2022-08-22", "--baseline", "2022-08-22 03:51", *extra])


def test_writes_the_dataset_layout(clone: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "dataset"
    assert _convert(_converter(), clone, out) == 0
    err = capsys.readouterr().err
    assert "skipped 2022-08-22T035800 (network_delay on currencyservice-cf787dd48-vpjrd)" in err

    dataset = Dataset.load(out)
    assert [c.case_id for c in dataset.cases] == ["2022-08-22T035354"]
    case = dataset.cases[0]
    assert (case.service, case.fault) == ("cartservice", "cpu_contention")
    label = json.loads((out / "cases" / case.case_id / "label.json").read_text())
    assert label["root_cause"]["pod"] == PODS["cartservice"] and label["root_cause"]["detail"] == "CpuUsageRate(%)"
    assert label["inject_time_unix_nano"] == 1661140434_000_000_000 and label["spans"] == 60
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["cases"] == 1 and meta["baseline_spans"] == 90 and meta["level"] == "service"
    assert "IntelligentDDS/Nezha (MIT)" in meta["source"]

    requests = list(read_requests(str(case.traces)))
    spans = {}
    for req in requests:
        for rs in req.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert attrs["service.name"] in PODS and attrs["k8s.pod.name"] == PODS[attrs["service.name"]]
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans[span.span_id] = (attrs["service.name"], span)
    assert len(spans) == 60
    roots = [s for _, s in spans.values() if not s.parent_span_id]
    assert len(roots) == 20
    root = roots[0]
    assert len(root.trace_id) == 16 and root.trace_id[:8] == bytes(8)  # a 64-bit id, left-padded
    assert root.start_time_unix_nano % 1_000_000_000 == 0  # the exponent form, read back exactly
    children = [(svc, s) for svc, s in spans.values() if s.parent_span_id == root.span_id]
    assert sorted(svc for svc, _ in children) == ["cartservice", "currencyservice"]
    cart = next(s for svc, s in children if svc == "cartservice")
    assert cart.end_time_unix_nano - cart.start_time_unix_nano == 405_000_000
    assert cart.trace_id == root.trace_id and cart.name == "hipstershop.cartservice/Get"


def test_faulttrace_eval_reads_the_converted_dataset(clone: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "dataset"
    assert _convert(_converter(), clone, out) == 0
    from processor.cli import main as faulttrace

    capsys.readouterr()
    assert faulttrace(["eval", str(out), "--format", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # a line per case, then the summary
    cases = [line for line in lines if "case" in line]
    assert [c["case"] for c in cases] == ["2022-08-22T035354"]
    assert cases[0]["top"][0] == "cartservice"  # the slowed service, against the converted baseline


@pytest.mark.parametrize(("column", "value", "message"), [
    ("SpanID", "not-hex", "SpanID 'not-hex' is not a hex id"),
    ("StartTimeUnixNano", "yesterday", "StartTimeUnixNano 'yesterday' is not a time"),
    ("PodName", "", "PodName is empty"),
])
def test_bad_rows_are_named(clone: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            column: str, value: str, message: str):
    path = clone / "rca_data" / "2022-08-22" / "trace" / "03_55_trace.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    rows[3][column] = value
    _write_csv(path, rows)
    assert _convert(_converter(), clone, tmp_path / "dataset") == 2
    err = capsys.readouterr().err
    assert f"03_55_trace.csv:5: {message}" in err


def test_a_file_without_nezhas_columns_and_a_missing_baseline_are_errors(clone: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]):
    convert = _converter()
    assert _convert(convert, clone, tmp_path / "a", "--baseline", "2022-08-22 09:00") == 2
    assert "09_00_trace.csv: no such baseline trace file" in capsys.readouterr().err
    (clone / "construct_data" / "2022-08-22" / "trace" / "03_51_trace.csv").write_text("trace,span\n1,2\n")
    assert _convert(convert, clone, tmp_path / "b") == 2
    assert "not a Nezha trace file: no column TraceID" in capsys.readouterr().err
