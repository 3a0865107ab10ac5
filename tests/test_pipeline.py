"""processor.pipeline: a start that fails stops what had started and says why in one line."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest

from processor.config import parse_config
from processor.pipeline import Pipeline, StartError
from tests.support.harness import config_dict, grpc_exporter

pytestmark = pytest.mark.timeout(60)


def test_a_port_in_use_fails_the_start_and_stops_what_had_started(grpc_sink, capfd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = parse_config(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)},
                                          http={"endpoint": f"127.0.0.1:{port}"}), "<test>")

        async def main() -> tuple[str, int, set[asyncio.Task]]:
            pipeline = Pipeline(config)
            with pytest.raises(StartError) as err:
                await pipeline.start()
            grpc_port = pipeline.ports()["otlp/grpc"]  # the gRPC receiver had started
            return str(err.value), grpc_port, asyncio.all_tasks() - {asyncio.current_task()}

        message, grpc_port, tasks = asyncio.run(main())
    gc.collect()  # grpc's server objects complain from __del__ if they were left running
    assert message == f"receivers.otlp.protocols.http: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert tasks == set()  # the release loop and exporters' consumers are gone
    with socket.socket() as again:
        again.bind(("127.0.0.1", grpc_port))  # the gRPC receiver let its port go
    assert "Event loop is closed" not in capfd.readouterr().err


def test_a_grpc_port_in_use_is_reported_without_grpcio_noise(grpc_sink, capfd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = parse_config(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)},
                                          grpc={"endpoint": f"127.0.0.1:{port}"}), "<test>")

        async def main() -> str:
            with pytest.raises(StartError) as err:
                await Pipeline(config).start()
            return str(err.value)

        message = asyncio.run(main())
    assert message == f"receivers.otlp.protocols.grpc: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert capfd.readouterr().err == ""


def test_batch_send_batch_max_size_caps_the_spans_of_every_payload(grpc_sink, pipeline_factory):
    from tests.support.harness import grpc_export, simple_request, wait_until

    config = config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)})
    config["processors"]["batch"] = {"send_batch_size": 3, "send_batch_max_size": 3}
    config["service"]["pipelines"]["traces"]["processors"] = ["batch", "faulttrace"]
    running = pipeline_factory(config)
    grpc_export(running.grpc_target, simple_request(1, traces=5, spans_per_trace=2))
    wait_until(lambda: grpc_sink.span_count == 10, 10, "every span to arrive")
    sizes = [sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans) for r in grpc_sink.requests]
    assert max(sizes) == 3 and sum(sizes) == 10


def test_metrics_served_where_the_collectors_pull_reader_says(grpc_sink, pipeline_factory):
    import requests

    config = config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)})
    config["service"]["telemetry"]["metrics"] = {
        "level": "detailed", "readers": [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": 0}}}}]}
    running = pipeline_factory(config)
    reply = requests.get(f"{running.metrics_url}/metrics", timeout=5)
    assert reply.status_code == 200 and "faulttrace_receiver_accepted_spans_total" in reply.text
    config["service"]["telemetry"]["metrics"] = {"level": "none"}
    assert "metrics" not in pipeline_factory(config).ports
