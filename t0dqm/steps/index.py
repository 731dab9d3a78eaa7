"""The DQM GUI index: samples and monitor elements in SQLite (``<index_dir>/index.sqlite``).

A *partial index* is a small SQLite file in ``<work_dir>/partial/`` (temp name, then rename) with one
sample per file plus its monitor elements. Receive writes one per batch (``batch-<id>-<random>.sqlite``,
:func:`index_received`) from the elements its ROOT check already read, after the batch's catalog rows are
committed and before it moves them pending -> partial; :func:`import_one` writes ``<file_id>.sqlite`` for
one file (recovery, reprocessing). Merge (one writer, under the catalog lease ``index-merge:<flavour>``)
copies the samples of files in state partial into the main index, a batch per transaction, marks them
indexed in the catalog, and removes a partial file only once every sample in it is settled (after both
commits). A sample that fails to merge marks its file ``failed`` with the reason, and its partial stays
for ``t0dqm index retry-failed``. A crash between the index commit and the catalog update is harmless:
the sample row is unique per file, so the next merge sees it and only updates the catalog. A sample whose
catalog row is gone or has another path (a stale partial) is never merged.

Run deletion removes (run, dataset) samples chosen by :mod:`t0dqm.policies.run_deletion`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from t0dqm import config
from t0dqm.catalog import files
from t0dqm.catalog.db import Catalog, worker_identity
from t0dqm.catalog.files import set_index_state
from t0dqm.catalog.recovery import stale_ids
from t0dqm.catalog.states import INDEX_FAILED, INDEX_PARTIAL, INDEX_PENDING, INDEX_SKIPPED, INDEXED, REMOVED
from t0dqm.formats import naming, rootcheck
from t0dqm.policies import run_deletion, versions
from t0dqm.steps.next import Context, Next, Outcome
from t0dqm.steps.reconcile import Resume, recoverer

logger = logging.getLogger("t0dqm.steps.index")

MERGE_TASK = "t0dqm.tasks.index.merge"
IMPORT_TASK = "t0dqm.tasks.index.import_file"
DELETE_RUNS_TASK = "t0dqm.tasks.index.delete_runs"
MERGE_DELAY = 0.5  # seconds

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL UNIQUE,
    run INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    version INTEGER NOT NULL,
    cls TEXT NOT NULL,
    subsystem TEXT,
    path TEXT NOT NULL,
    run_type TEXT,
    lumis INTEGER,
    start_time REAL,
    end_time REAL,
    n_mes INTEGER NOT NULL DEFAULT 0,
    imported_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_samples_run ON samples (run, dataset);
CREATE TABLE IF NOT EXISTS monitor_elements (
    sample_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    value
);
CREATE INDEX IF NOT EXISTS ix_me_sample ON monitor_elements (sample_id);
CREATE TABLE IF NOT EXISTS deleted_runs (
    run INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    samples INTEGER NOT NULL,
    deleted_at REAL NOT NULL
);
"""
SAMPLE_COLUMNS = (
    "file_id",
    "run",
    "dataset",
    "version",
    "cls",
    "subsystem",
    "path",
    "run_type",
    "lumis",
    "start_time",
    "end_time",
    "n_mes",
    "imported_at",
)
OFFLINE_FLAVOURS = ("offline", "relval")
MERGE_BATCH = 500  # samples per index transaction
BATCH_PREFIX = "batch-"
ATTACH_MAX = 8  # partial files attached to the index connection at once (SQLite allows 10)


def merge_lease_name(settings: config.Settings) -> str:
    return f"index-merge:{settings.flavour}"


def partial_dir(settings: config.Settings) -> Path:
    return settings.work_dir / "partial"


def partial_path(settings: config.Settings, file_id: int) -> Path:
    return partial_dir(settings) / f"{file_id}.sqlite"


def index_path(settings: config.Settings) -> Path:
    return settings.index_dir / "index.sqlite"


def connect(path: Path, *, fast: bool = False) -> sqlite3.Connection:
    """Writer connection in autocommit mode (we issue BEGIN ourselves) with the schema in place.

    The main index is written only by the holder of the merge lease, with a rollback journal
    (journal_mode=DELETE, synchronous=FULL): the index may live on a shared file system (NFS, CephFS),
    where SQLite's WAL is unsupported (it needs shared memory between the processes). See
    docs/benchmarks.md for WAL, rollback journal and PostgreSQL side by side. ``fast``: a partial index
    (journal and fsync off: it is written under a temp name, renamed, and rebuilt from its ROOT file if
    lost).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(_uri(path), timeout=60, isolation_level=None, uri=True)
    if fast:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
    else:
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if mode != "delete":  # an index left in WAL by an older t0dqm, still open somewhere
            logger.warning("index %s stays in journal mode %s until its other connections close", path, mode)
        conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


def connect_reader(path: Path) -> sqlite3.Connection | None:
    """Read-only connection to an index (the GUI's side: never writes, never changes the journal mode);
    None when the index does not exist yet."""
    if not path.exists():
        return None
    return sqlite3.connect(_uri(path, "mode=ro"), timeout=60, isolation_level=None, uri=True)


def attach_uri(partial: Path) -> str:
    """URI to attach or open a partial index: read-only and immutable (it never changes once renamed into
    place), so SQLite takes no file locks on it; safe when another host wrote it to a shared folder."""
    return _uri(partial, "mode=ro&immutable=1")


def _uri(path: Path, query: str = "") -> str:
    return f"file:{quote(str(path))}" + (f"?{query}" if query else "")


# -- import -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFacts:
    run_type: str
    lumis: int | None
    start_time: float | None
    end_time: float | None


def run_facts(mes: list[rootcheck.ME], mtime: float) -> RunFacts:
    """Run type, lumis and times from the file's scalars (Info/ProvInfo, EventInfo); file time else."""
    values: dict[str, Any] = {}
    lumis: int | None = None
    for me in mes:
        if me.value is None:
            continue
        leaf = me.path.rsplit("/", 1)[-1]
        if leaf == "iLumiSection" and isinstance(me.value, int):
            lumis = max(lumis or 0, me.value)
        values.setdefault(leaf, me.value)
    hlt = values.get("hltKey") or values.get("HLTKey")
    run_type = run_deletion.run_type_from(values.get("isCollisionsRun"), str(hlt) if hlt else None)
    start = values.get("runStartTimeStamp")
    end = values.get("runEndTimeStamp")
    return RunFacts(
        run_type,
        lumis,
        float(start) if isinstance(start, (int, float)) and start > 0 else mtime,
        float(end) if isinstance(end, (int, float)) and end > 0 else None,
    )


def _write_partial_file(final: Path, entries: list[tuple[Any, list[rootcheck.ME], RunFacts]]) -> Path:
    """A partial index holding one sample per entry (row, elements, facts): temp name, then rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    conn = connect(tmp, fast=True)
    now = time.time()
    try:
        conn.execute("BEGIN")
        for sample_id, (row, mes, facts) in enumerate(entries, 1):
            values = (
                sample_id,
                row.id,
                row.run,
                row.dataset,
                row.version,
                row.cls,
                row.subsystem,
                row.path,
                facts.run_type,
                facts.lumis,
                facts.start_time,
                facts.end_time,
                len(mes),
                now,
            )
            conn.execute(
                f"INSERT INTO samples (id, {', '.join(SAMPLE_COLUMNS)})"  # noqa: S608 - constant column names
                f" VALUES ({', '.join('?' * 14)})",
                values,
            )
            conn.executemany(
                "INSERT INTO monitor_elements (sample_id, path, kind, value)"  # noqa: S608 - int from enumerate
                f" VALUES ({sample_id}, ?, ?, ?)",
                [(me.path, me.kind, me.value) for me in mes],
            )
        conn.execute("COMMIT")
    finally:
        conn.close()
    os.replace(tmp, final)
    return final


def write_partial(settings: config.Settings, row: Any, mes: list[rootcheck.ME], facts: RunFacts) -> Path:
    """Write the partial index of one file (temp name, then rename); return its path."""
    return _write_partial_file(partial_path(settings, row.id), [(row, mes, facts)])


def write_batch_partial(
    settings: config.Settings, entries: list[tuple[Any, list[rootcheck.ME], RunFacts]]
) -> Path:
    """Write one partial index for several files (``batch-<first id>-<random>.sqlite``); return its path."""
    name = f"{BATCH_PREFIX}{entries[0][0].id}-{uuid.uuid4().hex[:8]}.sqlite"
    return _write_partial_file(partial_dir(settings) / name, entries)


def partial_contents(partial: Path) -> list[tuple[int, str | None]]:
    """(file id, repository path) of each sample of a partial index. A single-file partial
    (``<id>.sqlite``) is named after its file and not opened (path None)."""
    stem = partial.name[: -len(".sqlite")]
    if stem.isdigit():
        return [(int(stem), None)]
    src = sqlite3.connect(attach_uri(partial), uri=True)
    try:
        return [(int(r[0]), r[1]) for r in src.execute("SELECT file_id, path FROM samples")]
    finally:
        src.close()


def list_partials(
    settings: config.Settings, cache: dict[str, list[tuple[int, str | None]]] | None = None
) -> dict[Path, list[tuple[int, str | None]]]:
    """Every partial index file with its samples (see :func:`partial_contents`). ``cache``: contents by file
    name from an earlier call (a partial never changes once renamed into place). An unreadable batch
    partial is logged and left alone (its files are recovered by reconcile through import)."""
    folder = partial_dir(settings)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".sqlite") and not n.startswith("."))
    except FileNotFoundError:
        return {}
    cache = {} if cache is None else cache
    out: dict[Path, list[tuple[int, str | None]]] = {}
    for name in names:
        if name not in cache:
            try:
                cache[name] = partial_contents(folder / name)
            except sqlite3.Error as exc:
                logger.warning("unreadable partial index %s: %s", name, exc)
                continue
        out[folder / name] = cache[name]
    return out


def has_partial(settings: config.Settings, file_id: int) -> bool:
    """True when some partial index holds a sample of the file."""
    if partial_path(settings, file_id).exists():
        return True
    return any(file_id == fid for contents in list_partials(settings).values() for fid, _ in contents)


@dataclass(frozen=True)
class Received:
    """A file receive has just filed (index pending), with the monitor elements its check read."""

    id: int
    run: int
    dataset: str
    version: int
    cls: str
    subsystem: str | None
    path: str
    mtime: float
    mes: list[rootcheck.ME]


def _superseded(catalog: Catalog, row: Any) -> int | None:
    """The newest version of the file's sample when it is newer than this file, else None."""
    return _superseded_many(catalog, [row]).get(row.id)


def _superseded_many(catalog: Catalog, rows: list[Any]) -> dict[int, int]:
    """{file id: newest version} for the rows that a newer version of their sample supersedes (one query)."""
    if not rows:
        return {}
    with catalog.read() as conn:
        others = files.versions_of(conn, sorted({r.run for r in rows}), sorted({r.dataset for r in rows}))
    by_sample: dict[tuple[int, str], list[versions.VersionedFile]] = {}
    for o in others:
        by_sample.setdefault((o.run, o.dataset), []).append(
            versions.VersionedFile(
                o.path, o.run, o.dataset, o.subsystem, o.version, present=o.state != REMOVED
            )
        )
    out: dict[int, int] = {}
    for row in rows:
        mine = versions.VersionedFile(row.path, row.run, row.dataset, row.subsystem, row.version)
        known = by_sample.get((row.run, row.dataset), [])
        if not versions.is_newest(mine, known):
            out[row.id] = versions.newest_versions(known)[mine.key]
    return out


def index_received(settings: config.Settings, catalog: Catalog, received: list[Received]) -> dict[int, str]:
    """Partial index for files receive has just filed, from the elements its check read (the file is read
    once): superseded versions are skipped (offline flavours), the others go into one partial index and
    move pending -> partial. Returns {file id: new index_state} for the files that moved."""
    out: dict[int, str] = {}
    todo = list(received)
    if settings.flavour in OFFLINE_FLAVOURS:
        newest = _superseded_many(catalog, todo)
        for file_id, version in newest.items():
            for moved in set_index_state(
                catalog, [file_id], [INDEX_PENDING], INDEX_SKIPPED, f"superseded by V{version:04d}"
            ):
                out[moved] = INDEX_SKIPPED
        todo = [r for r in todo if r.id not in newest]
    if todo:
        write_batch_partial(settings, [(r, r.mes, run_facts(r.mes, r.mtime)) for r in todo])
        for moved in set_index_state(catalog, [r.id for r in todo], [INDEX_PENDING], INDEX_PARTIAL):
            out[moved] = INDEX_PARTIAL
    return out


def import_one(file_id: int, settings: config.Settings, catalog: Catalog) -> str:
    """Write the partial index of one file; returns the file's index_state afterwards ("missing" when
    there is no such row). Idempotent: indexed, skipped, failed and partial files are left alone.
    Receive normally writes the partial itself; this is for recovery and reprocessing."""
    with catalog.read() as conn:
        row = files.row_by_id(conn, file_id)
    if row is None:
        return "missing"
    if row.index_state in (INDEXED, INDEX_SKIPPED, INDEX_FAILED):
        return row.index_state
    if row.index_state == INDEX_PARTIAL and has_partial(settings, file_id):
        return INDEX_PARTIAL
    path = settings.repository / row.path
    if row.state == REMOVED or not path.exists():
        set_index_state(
            catalog, [file_id], [INDEX_PENDING, INDEX_PARTIAL], INDEX_SKIPPED, "ROOT file not on disk"
        )
        return INDEX_SKIPPED
    if settings.flavour in OFFLINE_FLAVOURS:
        newest = _superseded(catalog, row)
        if newest is not None:
            set_index_state(
                catalog,
                [file_id],
                [INDEX_PENDING, INDEX_PARTIAL],
                INDEX_SKIPPED,
                f"superseded by V{newest:04d}",
            )
            return INDEX_SKIPPED
    try:
        mes = rootcheck.inspect(path, None).mes
    except rootcheck.RootCheckError as exc:
        set_index_state(
            catalog, [file_id], [INDEX_PENDING, INDEX_PARTIAL], INDEX_FAILED, f"import: {exc.reason}"
        )
        return INDEX_FAILED
    write_partial(settings, row, mes, run_facts(mes, row.mtime))
    set_index_state(catalog, [file_id], [INDEX_PENDING, INDEX_PARTIAL], INDEX_PARTIAL)
    return INDEX_PARTIAL


# -- merge ------------------------------------------------------------------------------------------


class MergeBusy(RuntimeError):
    """Another merger holds the index lease."""


@contextmanager
def merge_lease(settings: config.Settings, catalog: Catalog, seconds: float | None = None) -> Iterator[None]:
    """The single-writer lease on the flavour's index (merge, run deletion); MergeBusy when taken."""
    name = merge_lease_name(settings)
    owner = f"{worker_identity()}:{uuid.uuid4().hex[:8]}"
    if not catalog.acquire_lease(name, owner, seconds or settings.reconcile.lease_seconds):
        raise MergeBusy(name)
    try:
        yield
    finally:
        catalog.release_lease(name, owner)


def _merge_order(row: Any) -> tuple:
    """Class priority, run asc, version asc, dataset desc (the original import order)."""
    return (naming.class_priority(row.cls), row.run, row.version, tuple(-ord(c) for c in row.dataset), row.id)


def merge_partial(conn: sqlite3.Connection, partial: Path, file_id: int) -> bool:
    """Copy one file's sample from a partial index into the main index (inside the caller's transaction).
    False when the file's sample is already there (an earlier merge committed it)."""
    if conn.execute("SELECT 1 FROM samples WHERE file_id = ?", (file_id,)).fetchone():
        return False
    src = sqlite3.connect(attach_uri(partial), uri=True)
    try:
        sample = src.execute(
            f"SELECT id, {', '.join(SAMPLE_COLUMNS)}"  # noqa: S608 - constant column names
            " FROM samples WHERE file_id = ?",
            (file_id,),
        ).fetchone()
        if sample is None:
            raise ValueError(f"partial index {partial.name} has no sample for file {file_id}")
        mes = src.execute(
            "SELECT path, kind, value FROM monitor_elements WHERE sample_id = ?", (sample[0],)
        ).fetchall()
    finally:
        src.close()
    cur = conn.execute(
        f"INSERT INTO samples ({', '.join(SAMPLE_COLUMNS)})"  # noqa: S608 - constant column names
        f" VALUES ({', '.join('?' * 13)})",
        sample[1:],
    )
    sample_id = cur.lastrowid
    conn.executemany(
        "INSERT INTO monitor_elements (sample_id, path, kind, value) VALUES (?, ?, ?, ?)",
        [(sample_id, *me) for me in mes],
    )
    return True


def _pending_partials(
    settings: config.Settings,
    catalog: Catalog,
    cache: dict[str, list[tuple[int, str | None]]] | None = None,
) -> tuple[list[tuple[Any, Path]], list[Path]]:
    """(samples ready to merge: (catalog row in index_state partial, its partial file), in merge order;
    partial files with nothing left in them: every sample indexed, skipped, without a catalog row, or
    recorded under another path (a stale partial whose id was reused))."""
    partials = list_partials(settings, cache)
    ids = sorted({fid for contents in partials.values() for fid, _ in contents})
    found: dict[int, Any] = {}
    with catalog.read() as conn:
        for indexed in files.index_rows(conn, ids):
            found[indexed.id] = indexed
    ready: dict[int, tuple[Any, Path]] = {}
    settled: list[Path] = []
    for partial, contents in partials.items():
        live = False
        for file_id, path in contents:
            row = found.get(file_id)
            if row is None or (path is not None and row.path != path):
                continue
            if row.index_state == INDEX_PARTIAL:
                ready.setdefault(file_id, (row, partial))
                live = True
            elif row.index_state in (INDEX_PENDING, INDEX_FAILED):  # about to be marked, or kept for a retry
                live = True
        if not live:
            settled.append(partial)
    return sorted(ready.values(), key=lambda rp: _merge_order(rp[0])), settled


def merge_all(
    settings: config.Settings,
    catalog: Catalog,
    *,
    batch: int = MERGE_BATCH,
    max_seconds: float = 300.0,
    merge_one: Callable[..., bool] | None = None,
) -> dict[str, int]:
    """Merge every ready partial index into the main index (under the merge lease), batch by batch.

    Returns counts {indexed, failed, orphans} (orphans: partial files removed with nothing left in them).
    A partial file is removed only once every sample in it is settled, after both commits.
    ``merge_one`` replaces :func:`merge_partial` (tests). Raises MergeBusy when another merger holds the lease.
    """
    counts = {"indexed": 0, "failed": 0, "orphans": 0}
    deadline = time.monotonic() + max_seconds
    cache: dict[str, list[tuple[int, str | None]]] = {}
    with merge_lease(settings, catalog):
        conn = connect(index_path(settings))
        try:
            while time.monotonic() < deadline:
                ready, settled = _pending_partials(settings, catalog, cache)
                for partial in settled:
                    partial.unlink(missing_ok=True)
                    cache.pop(partial.name, None)
                counts["orphans"] += len(settled)
                if not ready:
                    break
                done, failed = _merge_batch(conn, ready[:batch], merge_one)
                moved = set_index_state(catalog, done, [INDEX_PARTIAL], INDEXED)
                set_index_state(catalog, failed, [INDEX_PARTIAL], INDEX_FAILED, reasons=failed)
                counts["indexed"] += len(moved)
                counts["failed"] += len(failed)
                for file_id, why in failed.items():
                    logger.warning("index merge failed for file %s: %s", file_id, why)
        finally:
            conn.close()
    _merge_alarm(catalog, counts)
    return counts


MERGE_ALARM = "index-merge-failed"


def _merge_alarm(catalog: Catalog, counts: dict[str, int]) -> None:
    """Raise the merge alarm on failures; clear it once merges go through with no failed file left."""
    from t0dqm.catalog.alarms import clear_alarm, raise_alarm

    if counts["failed"]:
        raise_alarm(
            catalog,
            MERGE_ALARM,
            f"{counts['failed']} partial index(es) failed to merge; see "
            f"files.reason, then `t0dqm index retry-failed`",
        )
    elif counts["indexed"] and not catalog.counts("file", "index_state").get(INDEX_FAILED):
        clear_alarm(catalog, MERGE_ALARM)


def _merge_batch(
    conn: sqlite3.Connection, ready: list[tuple[Any, Path]], merge_one: Callable[..., bool] | None
) -> tuple[list[int], dict[int, str]]:
    """Merge samples, one transaction per group of partial files (each attached to the index connection, so
    the elements are copied by SQLite with INSERT ... SELECT); ``merge_one`` (tests): one transaction, each
    sample through it. A sample that fails is rolled back alone (savepoint) and reported."""
    done: list[int] = []
    failed: dict[int, str] = {}
    if merge_one is not None:
        _merge_group(conn, [(row, partial, None) for row, partial in ready], merge_one, done, failed)
        return done, failed
    partials = list(dict.fromkeys(partial for _, partial in ready))
    for start in range(0, len(partials), ATTACH_MAX):
        group = partials[start : start + ATTACH_MAX]
        aliases: dict[Path, str] = {}
        try:
            for k, partial in enumerate(group):
                try:
                    conn.execute(f"ATTACH DATABASE ? AS p{k}", (attach_uri(partial),))
                    aliases[partial] = f"p{k}"
                except sqlite3.Error as exc:
                    for row, p in ready:
                        if p == partial:
                            failed[row.id] = f"merge: cannot open {partial.name}: {exc}"
            work: list[tuple[Any, Path, str | None]] = [
                (row, partial, aliases[partial]) for row, partial in ready if partial in aliases
            ]
            if work:
                _merge_group(conn, work, None, done, failed)
        finally:
            for alias in aliases.values():
                conn.execute(f"DETACH DATABASE {alias}")
    return done, failed


def _merge_group(
    conn: sqlite3.Connection,
    work: list[tuple[Any, Path, str | None]],
    merge_one: Callable[..., bool] | None,
    done: list[int],
    failed: dict[int, str],
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for row, partial, alias in work:
            conn.execute("SAVEPOINT one")
            try:
                if merge_one is not None:
                    merge_one(conn, partial, row.id)
                else:
                    _merge_attached(conn, alias or "", partial, row.id)
                conn.execute("RELEASE one")
                done.append(row.id)
            except Exception as exc:  # noqa: BLE001 - one bad partial must not stop the batch
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                failed[row.id] = f"merge: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _merge_attached(conn: sqlite3.Connection, alias: str, partial: Path, file_id: int) -> bool:
    """As :func:`merge_partial`, from a partial attached as ``alias``."""
    if conn.execute("SELECT 1 FROM main.samples WHERE file_id = ?", (file_id,)).fetchone():
        return False
    found = conn.execute(
        f"SELECT id FROM {alias}.samples WHERE file_id = ?",  # noqa: S608 - alias is ours: p<k>
        (file_id,),
    ).fetchone()
    if found is None:
        raise ValueError(f"partial index {partial.name} has no sample for file {file_id}")
    columns = ", ".join(SAMPLE_COLUMNS)
    cur = conn.execute(
        f"INSERT INTO main.samples ({columns})"  # noqa: S608 - constant columns, our alias p<k>
        f" SELECT {columns} FROM {alias}.samples WHERE id = ?",
        (found[0],),
    )
    conn.execute(
        "INSERT INTO main.monitor_elements (sample_id, path, kind, value) "  # noqa: S608 - our alias p<k>
        f"SELECT ?, path, kind, value FROM {alias}.monitor_elements WHERE sample_id = ? ORDER BY rowid",
        (cur.lastrowid, found[0]),
    )
    return True


def reset_failed(settings: config.Settings, catalog: Catalog) -> list[tuple[int, str]]:
    """Send failed files back: to 'partial' when a partial index holds their sample, else to 'pending'."""
    with catalog.read() as conn:
        ids = files.ids_in_index_state(conn, INDEX_FAILED)
    kept = {fid for contents in list_partials(settings).values() for fid, _ in contents} if ids else set()
    out: list[tuple[int, str]] = []
    for file_id in ids:
        state = INDEX_PARTIAL if file_id in kept else INDEX_PENDING
        if set_index_state(catalog, [file_id], [INDEX_FAILED], state):
            out.append((file_id, state))
    return out


# -- queries and run deletion ---------------------------------------------------------------------


class Index:
    """Read access to the flavour's main index, plus run deletion."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.path = index_path(settings)

    def _conn(self) -> sqlite3.Connection:
        """A read-only connection (an empty in-memory index when none exists yet)."""
        conn = connect_reader(self.path)
        if conn is None:
            conn = sqlite3.connect(":memory:")
            conn.executescript(SCHEMA)
        conn.row_factory = sqlite3.Row
        return conn

    def samples(self, run: int | None = None, dataset: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM samples WHERE 1=1"
        args: list[Any] = []
        if run is not None:
            sql += " AND run = ?"
            args.append(run)
        if dataset is not None:
            sql += " AND dataset = ?"
            args.append(dataset)
        conn = self._conn()
        try:
            return [
                dict(r) for r in conn.execute(sql + " ORDER BY run DESC, dataset, subsystem, version", args)
            ]
        finally:
            conn.close()

    def monitor_elements(self, run: int, dataset: str) -> list[dict[str, Any]]:
        """Monitor elements of the newest version of each file (subsystem) of the sample."""
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT s.subsystem, s.version, m.path, m.kind, m.value FROM samples s "
                "JOIN monitor_elements m ON m.sample_id = s.id "
                "WHERE s.run = ? AND s.dataset = ? AND s.version = (SELECT MAX(version) FROM samples t "
                "WHERE t.run = s.run AND t.dataset = s.dataset AND t.subsystem IS s.subsystem) "
                "ORDER BY m.path",
                (run, dataset),
            )
            return [dict(r) for r in rows]
        finally:
            conn.close()

    def runs(self) -> list[run_deletion.IndexRun]:
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT run, dataset, MAX(run_type) AS run_type, MAX(lumis) AS lumis, "
                "MIN(start_time) AS start_time, MAX(end_time) AS end_time, "
                "COUNT(DISTINCT COALESCE(subsystem, '')) AS n FROM samples GROUP BY run, dataset"
            ).fetchall()
        finally:
            conn.close()
        return [
            run_deletion.IndexRun(
                r["run"],
                r["dataset"],
                r["run_type"] or run_deletion.OTHER,
                r["lumis"],
                r["start_time"],
                r["end_time"],
                r["n"],
            )
            for r in rows
        ]

    def delete_run(self, run: int, dataset: str, rule: str, reason: str) -> int:
        """Remove a (run, dataset) from the index; returns the number of samples removed. Only under the
        merge lease (see :func:`delete_runs`)."""
        conn = connect(self.path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            ids = [
                r[0]
                for r in conn.execute("SELECT id FROM samples WHERE run = ? AND dataset = ?", (run, dataset))
            ]
            conn.executemany("DELETE FROM monitor_elements WHERE sample_id = ?", [(i,) for i in ids])
            conn.execute("DELETE FROM samples WHERE run = ? AND dataset = ?", (run, dataset))
            conn.execute(
                "INSERT INTO deleted_runs VALUES (?, ?, ?, ?, ?, ?)",
                (run, dataset, rule, reason, len(ids), time.time()),
            )
            conn.execute("COMMIT")
            return len(ids)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()


def delete_runs(
    settings: config.Settings, catalog: Catalog, *, dry_run: bool | None = None, now: float | None = None
) -> list[run_deletion.RunDecision]:
    """Apply the run deletion rules (configuration ``run_deletion``) under the merge lease; returns the
    deletions (done, or only planned in dry-run). Every one is audited in the catalog."""
    conf = settings.run_deletion
    if dry_run is None:
        dry_run = bool(conf.get("dry_run", settings.deletion.dry_run))
    idx = Index(settings)
    options: dict[str, Any] = {"max_age_days": conf.max_age_days}
    for key in ("unmatched_keep_days", "min_subsystems"):
        if conf.get(key) is not None:
            options[key] = conf[key]
    with merge_lease(settings, catalog):
        decisions = run_deletion.runs_to_delete(
            idx.runs(),
            time.time() if now is None else now,
            conf.rules,  # type: ignore[arg-type]  # config.RunRule is a Mapping: Mapping.register(Table)
            **options,
        )
        for d in decisions:
            removed = 0 if dry_run else idx.delete_run(d.run, d.dataset, d.rule, d.reason)
            with catalog.begin() as conn:
                catalog.audit(
                    conn,
                    entity="index",
                    action="dry-run-delete-run" if dry_run else "delete-run",
                    path=f"{d.run}{d.dataset}",
                    rule=d.rule,
                    detail=f"{d.reason}; {removed} sample(s)",
                )
    return list(decisions)


# -- steps (the tasks of t0dqm.tasks.index call these) ------------------------------------------------


def merge_next() -> Next:
    """One merge, unless one is already waiting (its marker goes when it starts listing partials, see
    t0dqm.tasks.queued); a short countdown lets one merge pick up the partials of many imports."""
    return Next(MERGE_TASK, countdown=MERGE_DELAY)


def import_file(ctx: Context, file_id: int) -> Outcome:
    """Read the file's monitor elements into a partial index; next: a merge."""
    state = import_one(int(file_id), ctx.settings, ctx.catalog)
    if state == INDEX_PARTIAL:
        return Outcome(state, next=[merge_next()])
    if state != "indexed":
        ctx.log("import", file_id=file_id, index_state=state)
    return Outcome(state)


def merge(ctx: Context) -> Outcome:
    """Single writer: merge every ready partial index into the main index."""
    try:
        counts = merge_all(
            ctx.settings, ctx.catalog, max_seconds=max(60.0, ctx.settings.tasks.long_soft_time_limit - 60)
        )
    except MergeBusy:
        return Outcome({})
    if counts["indexed"] or counts["failed"]:
        ctx.log("merge", **counts)
    return Outcome(counts)


def trim_runs(ctx: Context, dry_run: bool | None = None) -> Outcome:
    """Remove runs from the index by run type, lumis and age (configuration run_deletion)."""
    try:
        decisions = delete_runs(ctx.settings, ctx.catalog, dry_run=dry_run)
    except MergeBusy:
        return Outcome([])
    if decisions:
        ctx.log("delete-runs", runs=len(decisions), dry_run=dry_run)
    return Outcome([d.__dict__ for d in decisions])


def by_priority(conn: files.Connection, ids: Iterable[int]) -> list[int]:
    """The ids in import order: class priority, then run, then id."""
    ids = list(ids)
    if not ids:
        return []
    rows = files.class_and_run(conn, ids)
    return [r.id for r in sorted(rows, key=lambda r: (naming.class_priority(r.cls), r.run, r.id))]


@recoverer("index-import")
def _recover_imports(conn: files.Connection, settings: Any, now: float) -> Iterable[Resume]:
    stale = stale_ids(conn, "file", "index_state", [INDEX_PENDING], now, settings.reconcile.stale_seconds)
    return [Resume(IMPORT_TASK, (file_id,)) for file_id in by_priority(conn, stale)]


@recoverer("index-merge")
def _recover_merge(conn: files.Connection, settings: Any, now: float) -> Iterable[Resume]:
    """Stale partial files: a merge; those whose partial index is gone (lost, unreadable): import again."""
    stale = stale_ids(conn, "file", "index_state", [INDEX_PARTIAL], now, settings.reconcile.stale_seconds)
    if not stale:
        return []
    held = {fid for contents in list_partials(settings).values() for fid, _ in contents}
    lost = [file_id for file_id in stale if file_id not in held]
    out = [Resume(MERGE_TASK)] if len(lost) < len(stale) else []
    return out + [Resume(IMPORT_TASK, (file_id,)) for file_id in by_priority(conn, lost)]
