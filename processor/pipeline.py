"""Pipeline: builds receivers -> store -> assembler -> release (analysis, annotation) -> exporters
from a Config, and starts and stops them in order.

One coroutine owns start and graceful stop.  Start: extensions (the
authenticators receivers consult), store (recovering spans its journal kept),
exporters, the release loop, the memory limiter, receivers, the admin server;
then a health check extension reports ready.  Stop: receivers
first (no new data), then every buffered trace is released and exported, then
exporters drain their queues within the shutdown timeout, then the store
deletes what was delivered from its journal and closes, then the extensions
stop.  A start that fails stops what had started; a port or file that cannot
be used is a ``StartError`` whose one-line message names the key path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from processor.analysis.factory import pipeline_analysis
from processor.analysis.protocols import Analyzer
from processor.analysis.verdict import TraceVerdict
from processor.analysis.worker import ProcessAnalysis
from processor.assembler import Assembler
from processor.config import Config
from processor.confmap import component_type
from processor.exporters.base import Exporter
from processor.exporters.factory import build_exporter
from processor.extensions.factory import ReadinessReporter, build_extensions
from processor.memory_limiter import MemoryLimiter
from processor.receivers.factory import Receiver, build_receivers
from processor.receivers.ingest import Ingest
from processor.release import Releaser
from processor.service.admin import AdminServer
from processor.service.incidents import Incidents
from processor.service.memory import FreeMemory
from processor.service.telemetry import Telemetry
from processor.service.verdicts import MeasuredAnalysis, VerdictObserver
from processor.store import SpanStore

log = logging.getLogger(__name__)


class StartError(Exception):
    """The pipeline could not start (a port in use, an unreadable certificate or token file).

    The message is one line naming the key path, e.g. ``receivers.otlp.protocols.http:
    cannot listen on 127.0.0.1:4318: Address already in use``; what had started is stopped.
    """


class Pipeline:
    """A running faulttrace: build with a Config, ``await start()``, ``await stop()``."""

    def __init__(self, config: Config, analyzer: Analyzer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.telemetry = Telemetry()
        self._clock = clock
        self.extensions = build_extensions(config.extensions, config.service.extensions)
        proc = config.processor
        limiter = config.pipeline_processor("memory_limiter")
        self.memory_limiter = MemoryLimiter(*limiter, self.telemetry) if limiter else None
        # ``analyzer``: run this one (in this process) instead of the configured analysis
        self._analysis = pipeline_analysis(proc, analyzer)
        self.verdicts = self._observe_verdicts(config)
        self.store = SpanStore(proc.storage.journal, proc.storage.memory_limit, threads=proc.storage.threads)
        self.assembler: Assembler[TraceVerdict] = Assembler(proc.decision_wait, proc.max_traces,
                                                            proc.max_spans_per_trace, proc.late_span_cache,
                                                            proc.complete_grace)
        self.exporters: list[Exporter] = [build_exporter(cid, cfg, self.telemetry)
                                          for cid, cfg in config.pipeline_exporters().items()]
        self._releaser = Releaser(self.store, self.assembler, self._analysis, self.exporters, self.telemetry,
                                  proc.release_interval, clock, FreeMemory(),
                                  max_spans=config.payload_max_spans, observer=self.verdicts)
        self.ingest = Ingest(self.store, proc.max_buffered_spans, self.telemetry, self._releaser.observe,
                             retry_after=max(1.0, proc.decision_wait),
                             admit=self.memory_limiter.admit if self.memory_limiter else None)
        self.receivers: list[Receiver] = [r for cid, rcfg in config.pipeline_receivers().items()
                                          for r in build_receivers(cid, rcfg, self.ingest, self.telemetry,
                                                                   self.extensions)]
        address = config.service.telemetry.metrics.endpoint
        self.admin = AdminServer(address, self.telemetry, self._health) if address else None
        self._loop_task: asyncio.Task[None] | None = None
        self._incidents_task: asyncio.Task[None] | None = None
        self._running = False
        # What has started, so that stop() after a failed start stops exactly that.
        self._started_extensions: list[str] = []
        self._store_open = False
        self._started_exporters: list[Exporter] = []

    async def start(self) -> None:
        """Start every component.  On failure what had started is stopped, then the error is raised:
        ``store.JournalError`` if the journal cannot be opened, ``StartError`` for a port or file
        that cannot be used."""
        try:
            await self._start()
        except BaseException as err:
            await self.stop()
            if isinstance(err, OSError):
                raise StartError(str(err)) from err
            raise
        for receiver in self.receivers:
            log.info("%s", receiver.describe())
        for extension in self.extensions.values():
            if isinstance(extension, ReadinessReporter):
                extension.set_ready(True)

    async def _start(self) -> None:
        for cid, extension in self.extensions.items():
            await extension.start()
            self._started_extensions.append(cid)
        recovered = await self.store.open()
        self._store_open = True
        if recovered:
            self._releaser.observe_traces(recovered)
        for exporter in self.exporters:
            await exporter.start()
            self._started_exporters.append(exporter)
        self._running = True
        self._loop_task = asyncio.create_task(self._releaser.run(), name="faulttrace-release")
        if self.verdicts.incidents is not None:
            self._incidents_task = asyncio.create_task(self.verdicts.incidents.run(), name="faulttrace-incidents")
        if self.memory_limiter is not None:
            await self.memory_limiter.start()
        for receiver in self.receivers:
            await receiver.start()
        if self.admin is not None:
            await self.admin.start()

    async def stop(self) -> None:
        """Graceful stop: nothing buffered is lost unless the shutdown timeout runs out."""
        timeout = self.config.service.shutdown_timeout
        deadline = self._clock() + timeout
        for extension in self.extensions.values():
            if isinstance(extension, ReadinessReporter):
                extension.set_ready(False)  # a load balancer stops sending while buffered traces leave
        for receiver in self.receivers:
            await receiver.stop(grace=min(5.0, timeout))
        if self.memory_limiter is not None:
            await self.memory_limiter.shutdown()
        self._running = False
        if self._loop_task is not None:
            self._releaser.stop()
            await self._loop_task
            self._loop_task = None
        if self._store_open:
            try:
                await asyncio.wait_for(self._releaser.release(self.assembler.drain()),
                                       max(0.0, deadline - self._clock()))
            except TimeoutError:
                log.error("shutdown timeout (%.0fs) reached with %d spans still buffered; %s", timeout,
                          self.store.buffered_spans,
                          "the journal keeps them for the next start" if self.store.durable else "they are lost")
        if self._incidents_task is not None:  # after the last release: its incidents are logged too
            self._incidents_task.cancel()
            await asyncio.gather(self._incidents_task, return_exceptions=True)
            self._incidents_task = None
        for exporter in self._started_exporters:
            await exporter.shutdown(max(0.0, deadline - self._clock()))
        self._started_exporters = []
        self.ingest.close()
        if self._store_open:
            await self.store.close()  # deletes what was delivered; the undelivered stays in the journal
            self._store_open = False
        if self._analysis is not None:
            self._analysis.close()
        if self.admin is not None:
            await self.admin.stop()
        for cid in reversed(self._started_extensions):
            await self.extensions[cid].shutdown()
        self._started_extensions = []

    def _observe_verdicts(self, config: Config) -> VerdictObserver:
        """The verdicts' metrics, log sentences and incident summary; the analysis timed, and
        its worker process (if any) watched for CPU, memory and restarts."""
        out = config.processor.verdict_log
        incidents = Incidents(out.summary_interval) if out.enabled and out.summary_interval > 0 else None
        processor_id = next((cid for cid in config.pipeline.processors if component_type(cid) == "faulttrace"),
                            "faulttrace")
        if self._analysis is not None:
            inner = self._analysis
            if isinstance(inner, ProcessAnalysis):
                self.telemetry.process.watch_worker(lambda: inner.pid, lambda: inner.restarts)
            self._analysis = MeasuredAnalysis(inner, self.telemetry)
        return VerdictObserver(self.telemetry, processor_id, log_verdicts=out.enabled,
                               url_template=out.trace_url_template, incidents=incidents,
                               max_traces=config.processor.max_traces)

    def ports(self) -> dict[str, int]:
        """Bound ports, by ``<component>/<transport>`` and ``metrics`` (useful with port 0)."""
        out = {f"{r.component_id}/{r.transport}": r.port for r in self.receivers}
        if self.admin is not None:
            out["metrics"] = self.admin.port
        for cid, extension in self.extensions.items():
            if port := getattr(extension, "port", 0):
                out[cid] = port
        return out

    def _health(self) -> dict[str, object]:
        return {"status": "ok" if self._running else "stopping",
                "buffered_spans": self.store.buffered_spans,
                "buffered_traces": self.assembler.buffered_traces}
