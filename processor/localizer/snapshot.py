"""Baseline snapshots: what the localizer learned survives a restart and seeds new instances.

With ``storage.path`` set, the learned sketches (``history.History``: every
``SKETCH_TABLES`` table and the count of traces they learned from), and what
other parts learned alongside (``Snapshots.attach``: the rules' healthy
firing rates, ``analysis.prevalence``), are written to a DuckDB file beside the journal (``snapshot_path``: ``journal.duckdb``
-> ``journal.baseline.duckdb``) at most every ``SNAPSHOT_INTERVAL`` seconds
while traffic is learned, and when the history is closed (a clean stop);
the next start restores them before its first batch, so it starts warm.  A
crash loses at most the last interval's learning.

A snapshot is written to a temporary file and renamed over the old one, so a
reader (a restart, ``faulttrace baseline export``) never sees half a file.
It records the bucket growth factors and its format version: a snapshot
taken with other ones would put values in the wrong buckets, so it is
refused (``SnapshotError``, the process starts cold and says why) rather than
misread.

``faulttrace baseline export FILE`` copies an instance's snapshot to FILE;
``faulttrace baseline import FILE`` checks FILE and installs it as the
snapshot of the configured instance (not running: its own snapshot at stop
would overwrite it), so every instance behind a load balancer starts from the
same baseline.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import duckdb

log = logging.getLogger(__name__)
T = TypeVar("T")


class Scale(Protocol):
    """The bucket scale of sketches (``history.HistoryConfig``)."""

    gamma: float
    attr_gamma: float


class History(Protocol):
    """What a snapshot needs of ``history.History`` (a protocol: history imports this module)."""

    config: Scale
    traces_seen: int

    def with_sketches(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T: ...


class Part(Protocol):
    """Something else learned that a snapshot keeps: its state as named numbers."""

    def state(self) -> dict[str, float]: ...

    def load_state(self, state: dict[str, float]) -> None: ...


FORMAT_VERSION = 1
# Everything a History learns (the tables history.SCHEMA_SQL creates): what a snapshot holds.
SKETCH_TABLES = ("lz_hist", "lz_ops", "lz_shapes", "lz_values", "lz_vtot", "lz_aops", "lz_akeys", "lz_acat",
                 "lz_anum")
SNAPSHOT_INTERVAL = 60.0  # seconds between snapshots while learning: what a crash may lose


class SnapshotError(RuntimeError):
    """A snapshot file that cannot be used (missing, not a snapshot, another format or bucket scale)."""


def snapshot_path(journal: str | Path) -> Path:
    """Where the instance whose journal is ``journal`` keeps its baseline snapshot."""
    path = Path(journal)
    return path.with_name(f"{path.stem}.baseline.duckdb")


def save(history: History, path: Path, parts: Mapping[str, Part] | None = None) -> None:
    """Write ``history``'s sketches and the ``parts``' states to ``path`` (atomically: a temporary
    file renamed over it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)

    def write(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("ATTACH ? AS lz_snap", [str(tmp)])
        try:
            for table in SKETCH_TABLES:
                conn.execute(f"CREATE TABLE lz_snap.{table} AS SELECT * FROM {table}")
            cfg = history.config
            meta = {"version": FORMAT_VERSION, "gamma": cfg.gamma, "attr_gamma": cfg.attr_gamma,
                    "traces_seen": history.traces_seen}
            conn.execute("CREATE TABLE lz_snap.meta (key VARCHAR, value DOUBLE)")
            conn.executemany("INSERT INTO lz_snap.meta VALUES (?, ?)", list(meta.items()))
            conn.execute("CREATE TABLE lz_snap.parts (part VARCHAR, key VARCHAR, value DOUBLE)")
            rows = [(name, k, v) for name, part in (parts or {}).items() for k, v in part.state().items()]
            if rows:
                conn.executemany("INSERT INTO lz_snap.parts VALUES (?, ?, ?)", rows)
        finally:
            conn.execute("DETACH lz_snap")

    try:
        history.with_sketches(write)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def restore(history: History, path: Path) -> int:
    """Replace ``history``'s sketches with the snapshot at ``path``; returns the traces it had
    learned from.  ``SnapshotError`` if the file cannot be used (``history`` is left as it was)."""
    check(path, scale_of(history.config))

    def read(conn: duckdb.DuckDBPyConnection) -> int:
        conn.execute("ATTACH ? AS lz_snap (READ_ONLY)", [str(path)])
        try:
            conn.execute("BEGIN TRANSACTION")
            try:
                for table in SKETCH_TABLES:
                    conn.execute(f"DELETE FROM {table}")
                    conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM lz_snap.{table}")
                conn.execute("COMMIT")
            except duckdb.Error as err:
                conn.execute("ROLLBACK")
                raise SnapshotError(f"{path}: its tables do not fit this version's baseline: {err}") from None
            row = conn.execute("SELECT value FROM lz_snap.meta WHERE key = 'traces_seen'").fetchone()
            return int(row[0]) if row else 0
        finally:
            conn.execute("DETACH lz_snap")

    traces = history.with_sketches(read)
    history.traces_seen = traces
    return traces


def scale_of(config: Scale) -> dict[str, float]:
    """The bucket scale sketches are kept at under ``config``: a snapshot must have the same."""
    return {"gamma": config.gamma, "attr_gamma": config.attr_gamma}


def check(path: Path, scale: Mapping[str, float] | None = None) -> dict[str, float]:
    """The snapshot's metadata; ``SnapshotError`` unless ``path`` is a snapshot of this format
    (and, given ``scale``, of that bucket scale: ``scale_of``)."""
    if not path.is_file():
        raise SnapshotError(f"{path}: no such snapshot")
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            missing = [t for t in ("meta", *SKETCH_TABLES) if t not in tables]
            if missing:
                raise SnapshotError(f"{path}: not a faulttrace baseline snapshot (no table {missing[0]})")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except duckdb.Error as err:
        raise SnapshotError(f"{path}: not a faulttrace baseline snapshot ({err})") from None
    want = {"version": FORMAT_VERSION, **(scale or {})}
    for key, value in want.items():
        if meta.get(key) != value:
            raise SnapshotError(f"{path}: taken with {key} {meta.get(key)}, this baseline uses {value}")
    return meta


def restore_part(path: Path, name: str, part: Part) -> bool:
    """Give ``part`` the state the snapshot at ``path`` holds for ``name``; False if it holds none
    (a snapshot taken before parts were kept has no ``parts`` table)."""
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            has = conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'parts'").fetchone()
            if not has or not has[0]:
                return False
            state = dict(conn.execute("SELECT key, value FROM parts WHERE part = ?", [name]).fetchall())
    except duckdb.Error as err:
        raise SnapshotError(f"{path}: cannot read {name}: {err}") from None
    if not state:
        return False
    part.load_state(state)
    return True


class Snapshots:
    """When to snapshot a history: ``restore`` at start, ``learned`` after each batch (at most every
    ``interval`` seconds it saves), ``close`` at a clean stop; ``attach`` adds a part."""

    def __init__(self, path: str | Path, interval: float = SNAPSHOT_INTERVAL) -> None:
        self.path = Path(path)
        self.interval = interval
        self._saved_at = time.monotonic()
        self._dirty = False
        self._parts: dict[str, Part] = {}
        self._restored = False  # the file at start was a usable snapshot: parts restore from it too

    def attach(self, name: str, part: Part) -> None:
        """Keep ``part`` in the snapshots too, giving it now what the restored snapshot holds for it."""
        self._parts[name] = part
        if self._restored:
            try:
                restore_part(self.path, name, part)
            except SnapshotError as err:
                log.warning("starting %s cold: %s", name, err)

    def restore(self, history: History) -> None:
        if not self.path.exists():
            return
        try:
            traces = restore(history, self.path)
        except SnapshotError as err:
            log.warning("starting with a cold baseline: %s", err)
            return
        self._restored = True
        log.info("baseline restored from %s (learned from %d traces)", self.path, traces)

    def learned(self, history: History) -> None:
        self._dirty = True
        if time.monotonic() - self._saved_at >= self.interval:
            self._save(history)

    def close(self, history: History) -> None:
        if self._dirty:
            self._save(history)

    def _save(self, history: History) -> None:
        self._saved_at = time.monotonic()
        try:
            save(history, self.path, self._parts)
            self._dirty = False
        except (OSError, duckdb.Error) as err:  # the analysis goes on; the next snapshot may succeed
            log.error("cannot write the baseline snapshot %s: %s", self.path, err)


def copy_snapshot(source: Path, target: Path, scale: Mapping[str, float] | None = None) -> dict[str, float]:
    """Check the snapshot ``source`` (against ``scale``, when given) and copy it to ``target``
    (atomically: a reader sees the old file or the new one); returns its metadata.  Export and
    import both."""
    meta = check(source, scale)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return meta
