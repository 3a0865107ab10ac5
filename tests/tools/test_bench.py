"""processor.tools.bench: a failed run is reported as failed (never ``0 spans/s``), medians leave
failed runs out, and the command exits 1 when a run failed."""

from __future__ import annotations

from processor.tools.bench import RunResult, summarize


def run(mode: str, rate: float | None, failed: str = "", cpu: float = 10.0, p99: float | None = 1.0) -> RunResult:
    return RunResult(mode, rate, 1000, 1000, 0, 100.0, 600.0, 900.0, 1000, cpu_us_per_span={"receiver": cpu},
                     verdict_latency_p50_s=p99, verdict_latency_p99_s=p99, failed=failed)


def test_a_failed_run_is_named_and_left_out_of_the_medians():
    summary = summarize([run("pipeline", 50_000.0, cpu=10.0), run("pipeline", None, "no span reached the sink",
                                                                   cpu=99.0, p99=None),
                         run("pipeline", 70_000.0, cpu=12.0), run("passthrough", 100_000.0, cpu=4.0)])
    assert summary["spans_per_s"] == 60_000
    assert summary["pipeline_cpu_us_per_span"] == {"receiver": 11.0}
    assert summary["failed"] == ["pipeline: no span reached the sink"]
    assert summary["ratio"] == 0.6


def test_a_mode_whose_every_run_failed_has_no_rate_at_all():
    summary = summarize([run("pipeline", 60_000.0), run("full", None, "too late", p99=None)])
    assert "full_spans_per_s" not in summary and "full_ratio" not in summary
    assert summary["full_verdict_latency_p99_s"] is None
    assert summary["failed"] == ["full: too late"]


def test_a_run_with_one_early_delivery_and_none_in_its_window_fails():
    from processor.tools.bench import window_rate

    samples = [(0.1 * i, 500 if i >= 5 else 0) for i in range(100)]  # one delivery at 0.5 s, then nothing
    rate, failed = window_rate(samples, 10.0)
    assert rate is None and "no span reached the sink in the measuring window" in failed
    rate, failed = window_rate([(0.1 * i, 1000 * i) for i in range(100)], 10.0)
    assert failed == "" and rate == 10_000
    rate, failed = window_rate([(0.1 * i, 0) for i in range(100)], 10.0)
    assert rate is None and "no span reached the sink while the load ran" in failed


def test_memory_a_buffered_span_adds_is_the_slope_through_samples_above_the_line():
    """RSS = 50 MB held whatever the buffer + 300 B a buffered span; a third of the samples are
    taken while a 60 MB batch is in flight: the slope is still 300 B, where dividing the RSS by
    the buffered spans reads 300 B plus the fixed part spread over them."""
    from processor.tools.bench import robust_slope

    points = [(n, 50e6 + 300.0 * n + (60e6 if i % 3 == 0 else 0)) for i, n in enumerate(range(1_000, 200_000, 2_000))]
    assert robust_slope(points) == 300.0
    assert points[-1][1] / points[-1][0] > 550
    assert robust_slope([(1_000, 5.0), (1_050, 9.0)]) is None   # the buffer never varied: no slope
    assert robust_slope([]) is None


def test_each_analysing_mode_reports_its_memory_a_buffered_span():
    full = run("full", 30_000.0)
    full.rss_slope_bytes_per_buffered_span = 1_100.0
    summary = summarize([run("pipeline", 60_000.0), full])
    assert summary["rss_bytes_per_buffered_span"] == 900 and summary["rss_slope_bytes_per_buffered_span"] is None
    assert summary["full_rss_bytes_per_buffered_span"] == 900
    assert summary["full_rss_slope_bytes_per_buffered_span"] == 1_100
