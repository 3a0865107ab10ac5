"""Analysis in a worker process: projection, rules, fault trees and the localizer off the receiving process.

In one process every return from DuckDB waits for the interpreter lock that
decoding keeps busy, and decoding the attributes analysis reads would double
the receiving process's work per span; in its own process the analysis
competes only for CPU.  Each released batch crosses as Arrow IPC (the span
bytes only when attributes are read from them; they stay behind too for
annotation and export), with the heads of its resources when resource
attributes are read; the verdict comes back pickled.  The worker builds its
analyzer from the same processor config, so its state (the localizer's
baseline) lives there.

On Linux the IPC stream is written into an anonymous memory file
(``memfd_create``) whose descriptor is passed over the pipe, and the worker
maps it: read from the pipe, a release of 100k of the bench's spans (~60 MB)
cost the worker ~0.8 µs a span, mapped ~0.2, and the receiving process about
the same either way (measured on the 2-core machine).  The files are written
again once the worker has let go of them (``transport``): a new file's pages
cost the kernel more than the copy.  Elsewhere the stream goes through the pipe.

Batches are sent ahead: the next batch is written while the worker still
analyses the one before, so the worker finds it waiting when it is done
instead of idling while this process takes it from the store and writes it
(0.2–0.6 s for 100k of the bench's spans, measured between the worker's
batches).  A thread sends, another reads the verdicts; the worker answers in
the order it was sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing as mp
import os
import pickle
import signal
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import pyarrow as pa

from dsl import AttrRef
from processor.analysis.attributes import Projection, Projector
from processor.analysis.build import analysis_projection, build_analyzer
from processor.analysis.runner import NOT_RUN, SerialAnalysis, analysis_connection, analyze_released, or_nothing
from processor.analysis.transport import Mappings, MemoryFiles, write_stream
from processor.analysis.verdict import BatchVerdict
from processor.config import FaulttraceProcessorConfig
from processor.service.memory import FreeMemory
from processor.service.process import tune_process

log = logging.getLogger(__name__)

IDLE = 2.0  # seconds without a batch after which the worker hands freed memory back (service.memory)
# Batches cross in a memory file passed by descriptor where the system has them (Linux).
SHARED_MEMORY = hasattr(os, "memfd_create") and hasattr(reduction, "send_handle")
NOT_READ = "the verdict on a batch of %d spans could not be read; it is exported without one"


def _serve(config_json: str, conn: Connection) -> None:
    # Ctrl-C at a terminal signals the whole process group: the parent stops the pipeline, which
    # drains through this worker and then closes its pipe (``close``); interrupted, the worker
    # would die mid-batch with a traceback and cost the last batches their verdicts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_process()
    config = FaulttraceProcessorConfig.model_validate_json(config_json)
    analyzer = build_analyzer(config)
    projection = analysis_projection(config, analyzer) if analyzer else Projection.of(())
    projector = Projector(projection)
    db = analysis_connection(config.storage)
    free_memory, analysed, mappings = FreeMemory(), False, Mappings()
    conn.send(pickle.dumps(projection.refs))
    while True:
        if analysed and not conn.poll(IDLE):  # the batches stopped: what they freed goes back
            analysed = not free_memory.release()
        try:
            message = pickle.loads(conn.recv_bytes())  # None: stop
            if message is None:
                break
            resources, size, token = message
            table = _receive_table(conn, size, token, mappings)
        except EOFError:
            break
        verdict = (analyze_released(analyzer, projector, db, table, resources) if analyzer
                   else BatchVerdict())
        del table  # its mapping can be let go of once no array of it is left
        conn.send_bytes(pickle.dumps((verdict, mappings.let_go()), protocol=pickle.HIGHEST_PROTOCOL))
        analysed = True
    if analyzer is not None:
        analyzer.close()


def _send_table(conn: Connection, table: pa.Table, resources: Mapping[int, bytes], pid: int | None,
                files: MemoryFiles | None) -> None:
    """Send a batch and its resource heads to the worker ``pid`` (``_receive_table`` takes it): in
    one of the worker's memory ``files``, or (None) through the pipe."""
    if files is None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        conn.send_bytes(pickle.dumps((resources, None, None), protocol=pickle.HIGHEST_PROTOCOL))
        conn.send_bytes(sink.getvalue())
        return
    token, fd = files.take()
    try:
        # Written straight into the file: no stream buffer grown to the batch's size on this side.
        size = write_stream(fd, table)
    except BaseException:  # the worker never saw the file
        if token is None:
            os.close(fd)
        else:
            files.give_back([token])
        raise
    try:
        conn.send_bytes(pickle.dumps((resources, size, token), protocol=pickle.HIGHEST_PROTOCOL))
        reduction.send_handle(conn, fd, pid)
    finally:
        if token is None:
            os.close(fd)  # the worker holds its own descriptor (or mapping) once it has the batch


def _receive_table(conn: Connection, size: int | None, token: int | None, mappings: Mappings) -> pa.Table:
    """The batch ``_send_table`` sent: ``size`` bytes in a memory file whose descriptor follows
    (``token``: lent, see ``Mappings``), or (None) the stream itself.  A mapped batch's arrays are
    views of the mapping."""
    if size is None:
        return pa.ipc.open_stream(conn.recv_bytes()).read_all()
    return mappings.read(reduction.recv_handle(conn), size, token)


@dataclasses.dataclass(frozen=True)
class _Sent:
    """Where a batch went: its verdict is read from the same pipe, even if the worker has been
    replaced since (a dead worker's pipe answers EOF: no verdict), and the files it lets go of
    go back to that worker's ``files``."""

    process: BaseProcess
    conn: Connection
    files: MemoryFiles | None


class ProcessAnalysis(SerialAnalysis):
    """The pipeline's analysis run in a child process (``protocols.Analysis``).

    A worker that dies (killed, out of memory, a crash in native code) costs
    the batch it had its verdict; the next batch starts a new one, at most
    every ``RESTART_INTERVAL`` seconds.  The new worker starts from the
    configured state: a learned baseline is relearned (or re-seeded).
    """

    RESTART_INTERVAL = 5.0

    def __init__(self, config: FaulttraceProcessorConfig) -> None:
        self._config_json = config.model_dump_json()
        self._closed = False
        self._started_at = 0.0
        self.restarts = 0  # workers started for one that died (faulttrace_analysis_worker_restarts)
        self._process, self._conn, projection = self._start()
        self._files = MemoryFiles() if SHARED_MEMORY else None  # the worker's: a new worker gets new ones
        self._projection = projection
        super().__init__()  # its thread sends the batches, one at a time: they are not interleaved on the pipe
        # Verdicts are read on a thread of their own, so the next batch is sent while one is analysed.
        self._verdicts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faulttrace-verdicts")
        # What the worker never reads is not sent: the span bytes unless span or
        # event attributes are projected, the group ids unless resource ones are.
        self._left_behind = ["scope_id"]
        if not projection.reads_span_bytes:
            self._left_behind.append("raw")
        if not projection.reads_resources:
            self._left_behind.append("resource_id")

    def _start(self) -> tuple[BaseProcess, Connection, Projection]:
        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(self._config_json, child), daemon=True, name="faulttrace-analysis")
        self._started_at = time.monotonic()
        process.start()
        child.close()
        try:
            projection = Projection.of(pickle.loads(conn.recv()))
        except EOFError:
            process.join(5)
            raise RuntimeError("the analysis process failed to start (its error is logged above)") from None
        return process, conn, projection

    def projection(self) -> frozenset[AttrRef]:
        return frozenset(self._projection.refs)

    @property
    def pid(self) -> int | None:
        """The worker's process id while it lives (for its CPU and memory metrics)."""
        return self._process.pid if self._process.is_alive() else None

    async def analyze(self, released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict:
        """The verdict on a released batch, sent as soon as it is given: batches given while
        others are under analysis wait at the worker, in order.  Never raises."""
        loop = asyncio.get_running_loop()
        spans = released.num_rows
        sent = await loop.run_in_executor(self._executor, or_nothing, NOT_RUN, spans, self._send, released, resources)
        if sent is None:
            return BatchVerdict()
        verdict = await loop.run_in_executor(self._verdicts, or_nothing, NOT_READ, spans, self._verdict, sent, spans)
        return BatchVerdict() if verdict is None else verdict

    def analyze_now(self, released: pa.Table, resources: Mapping[int, bytes]) -> BatchVerdict:
        """Send the batch, wait for the verdict."""
        sent = self._send(released, resources)
        return BatchVerdict() if sent is None else self._verdict(sent, released.num_rows)

    def _send(self, released: pa.Table, resources: Mapping[int, bytes]) -> _Sent | None:
        """Send a batch to the worker (a new one if it died); None when there is none to send to."""
        if not self._process.is_alive() and not self._restart():
            return None
        batch = released.drop_columns([c for c in self._left_behind if c in released.column_names])
        heads = dict(resources) if self._projection.reads_resources else {}
        sent = _Sent(self._process, self._conn, self._files)
        try:
            _send_table(sent.conn, batch, heads, sent.process.pid, sent.files)
        except OSError as err:
            self._gone(sent, err, released.num_rows)
            return None
        return sent

    def _verdict(self, sent: _Sent, spans: int) -> BatchVerdict:
        """The verdict on the batch ``sent``: answers come back in the order the batches went."""
        try:
            verdict, let_go = pickle.loads(sent.conn.recv_bytes())
        except (EOFError, OSError) as err:
            self._gone(sent, err, spans)
            return BatchVerdict()
        if sent.files is not None:
            sent.files.give_back(let_go)
        return verdict

    @staticmethod
    def _gone(sent: _Sent, err: Exception, spans: int) -> None:
        sent.process.join(1)  # reap it: its exit code, and the next batch sees it dead
        log.error("the analysis process is gone (%s, exit code %s); %d spans are exported without analysis",
                  err, sent.process.exitcode, spans)

    def _restart(self) -> bool:
        """Start a new worker for a dead one (not after close, not twice within RESTART_INTERVAL)."""
        if self._closed or time.monotonic() - self._started_at < self.RESTART_INTERVAL:
            return False
        self._conn.close()
        try:
            process, conn, projection = self._start()
        except RuntimeError as err:
            log.error("restarting the analysis process failed: %s", err)
            return False
        if projection != self._projection:  # the same config projects the same attributes
            log.error("the restarted analysis process projects other attributes; stopping it")
            process.kill()
            return False
        if self._files is not None:  # lent to the dead worker: closed, never written again
            self._files.close()
            self._files = MemoryFiles()
        self._process, self._conn = process, conn
        self.restarts += 1
        log.warning("the analysis process was restarted; its learned state starts over")
        return True

    def close(self) -> None:
        self._closed = True
        super().close()
        self._verdicts.shutdown(wait=True)
        try:
            self._conn.send_bytes(pickle.dumps(None))
        except OSError:
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
        if self._files is not None:
            self._files.close()
