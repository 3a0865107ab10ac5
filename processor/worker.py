"""Analysis in a worker process: rules, fault trees and the localizer off the receiving process.

In one process every return from DuckDB waits for the interpreter lock that
decoding keeps busy; in its own process the analysis competes only for CPU.
The batch crosses as Arrow IPC (without the span bytes, which stay behind for
annotation and export), the verdict comes back pickled.  The worker builds its
analyzer from the same processor config, so its state (the localizer's
baseline) lives there.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import pickle
from multiprocessing.connection import Connection

import duckdb
import pyarrow as pa

from dsl import AttrRef
from processor.analysis import BatchVerdict
from processor.config import FaulttraceProcessorConfig

log = logging.getLogger(__name__)
_LEFT_BEHIND = ("raw", "resource_id", "scope_id")  # what analysis never reads


def _serve(config_json: str, conn: Connection) -> None:
    from processor.analyzers import build_analyzer
    from processor.pipeline import tune_process

    tune_process()
    config = FaulttraceProcessorConfig.model_validate_json(config_json)
    analyzer = build_analyzer(config)
    db = duckdb.connect()
    db.execute(f"SET threads TO {int(config.storage.threads)}")
    conn.send(pickle.dumps(frozenset(analyzer.projection()) if analyzer else frozenset()))
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            break
        if not data:
            break
        table = pa.ipc.open_stream(data).read_all()
        db.register("released", table)
        try:
            verdict = analyzer.analyze(db, "released") if analyzer else BatchVerdict()
        except Exception:  # the worker's boundary: report nothing for this batch, keep serving
            logging.getLogger(__name__).exception("analysis failed on a batch")
            verdict = BatchVerdict()
        finally:
            db.unregister("released")
        conn.send_bytes(pickle.dumps(verdict, protocol=pickle.HIGHEST_PROTOCOL))
    close = getattr(analyzer, "close", None)
    if close is not None:
        close()


class ProcessAnalyzer:
    """An Analyzer whose work runs in a child process (``processor.analysis.Analyzer``)."""

    def __init__(self, config: FaulttraceProcessorConfig) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(config.model_dump_json(), child), daemon=True,
                                    name="faulttrace-analysis")
        self._process.start()
        child.close()
        try:
            self._projection: frozenset[AttrRef] = pickle.loads(self._conn.recv())
        except EOFError:
            self._process.join(5)
            raise RuntimeError("the analysis process failed to start (its error is logged above)") from None

    def projection(self) -> frozenset[AttrRef]:
        return self._projection

    def analyze(self, conn: duckdb.DuckDBPyConnection, table: str, arrow: pa.Table | None = None) -> BatchVerdict:
        if arrow is None:
            arrow = conn.sql(f"SELECT * EXCLUDE ({', '.join(_LEFT_BEHIND)}) FROM {table}").to_arrow_table()
        batch = arrow.drop_columns([c for c in _LEFT_BEHIND if c in arrow.column_names])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        try:
            self._conn.send_bytes(sink.getvalue())
            return pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as err:
            log.error("the analysis process is gone (%s); this batch is exported without analysis", err)
            return BatchVerdict()

    def close(self) -> None:
        try:
            self._conn.send_bytes(b"")
        except OSError:
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
