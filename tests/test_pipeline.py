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
