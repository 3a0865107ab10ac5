"""Traces replayed through a running pipeline, read back from its exporter (``demo``, ``eval --live``).

``LivePipeline`` is the real pipeline (``processor.pipeline.Pipeline``: receivers,
store, assembler, the analysis worker with its online learning, annotation,
exporters) started in this process on the embedded defaults, changed only
where a replay needs it: receivers and the metrics endpoint on free ports of
127.0.0.1 (port 0, so a local collector or ``serve`` on 4317/4318/8888 is
left alone), spans kept in memory (no journal, which one ``serve`` may hold),
one ``file`` exporter writing to ``out``, the localizer seeded with
``baseline``, and the given ``decision_wait`` / ``release_interval``.
``send`` posts a request to its OTLP/HTTP receiver as an SDK does; ``poll``
reads what the exporter wrote since (``tools.readback``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.config import Config, load_config
from processor.pipeline import Pipeline
from processor.tools.readback import Readback, Tail

EXPORTER = "file/replay"


class ReplayError(RuntimeError):
    """The pipeline refused a request, or its spans did not come out in time."""


def replay_config(out: Path, baseline: Path | None, decision_wait: float, release_interval: float,
                  rules: Sequence[str] = (), builtin_rules: bool = True) -> Config:
    """The embedded defaults with the replay's changes (see the module docstring)."""
    proc = "processors.faulttrace"
    sets = [f"{proc}.storage.path=\":memory:\"", f"{proc}.decision_wait={decision_wait}",
            f"{proc}.release_interval={release_interval}", f"{proc}.builtin_rules={json.dumps(builtin_rules)}",
            f"{proc}.rules={json.dumps(list(rules))}",
            f"exporters={json.dumps({EXPORTER: {'path': str(out)}})}",
            f"service.pipelines.traces.exporters={json.dumps([EXPORTER])}"]
    if baseline is not None:
        sets.append(f"{proc}.localizer.baseline={json.dumps(str(baseline))}")
    # environ={}: the OTEL_EXPORTER_OTLP_* variables must not redirect the replay's exporter
    return load_config(None, sets, {"grpc": 0, "http": 0, "metrics": 0}, environ={})


class LivePipeline:
    """``async with LivePipeline(config) as live``: started, then stopped (every buffered trace exported)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        exporter = config.exporters[EXPORTER]
        self.out = Path(exporter.path)
        self.readback = Readback()
        self.exported = 0          # spans read back from the exporter's file
        self._tail = Tail(self.out)
        self._pipeline: Pipeline | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url = ""

    async def __aenter__(self) -> LivePipeline:
        self.out.unlink(missing_ok=True)  # the file exporter appends: a replay starts from nothing
        # The analysis worker loads the rules and the baseline as it starts: off the event loop.
        self._pipeline = await asyncio.to_thread(Pipeline, self.config)
        await self._pipeline.start()
        self._url = f"http://127.0.0.1:{self._pipeline.ports()['otlp/http']}/v1/traces"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, err: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
        if self._pipeline is not None:
            await self._pipeline.stop()
        self.poll()

    @property
    def ports(self) -> dict[str, int]:
        return self._pipeline.ports() if self._pipeline is not None else {}

    async def send(self, request: ExportTraceServiceRequest, attempts: int = 20) -> None:
        """POST ``request`` as OTLP/HTTP protobuf; waits out a full store (503 with Retry-After)."""
        assert self._session is not None
        body = request.SerializeToString()
        for _ in range(attempts):
            async with self._session.post(self._url, data=body,
                                          headers={"Content-Type": "application/x-protobuf"}) as resp:
                if resp.status == 200:
                    return
                text = await resp.text(errors="replace")
                if resp.status not in (429, 503):
                    raise ReplayError(f"the receiver answered {resp.status}: {text[:200]}")
                await asyncio.sleep(min(5.0, float(resp.headers.get("Retry-After") or 1)))
        raise ReplayError(f"the receiver kept refusing a request ({attempts} attempts)")

    def poll(self) -> int:
        """Read what the exporter wrote since the last poll; the spans read back in all."""
        for doc in self._tail.documents():
            self.exported += self.readback.add(doc)
        return self.exported

    async def wait_exported(self, spans: int, timeout: float) -> bool:
        """Until ``spans`` spans have come out of the exporter (False if ``timeout`` ran out first)."""
        deadline = time.monotonic() + timeout
        while self.poll() < spans:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True
