"""Online backup: a consistent snapshot of the live database, while writes go on.

SQLite's backup API copies pages from a source connection. Stepped in small
chunks from a connection that does *not* hold a transaction, it restarts
whenever another connection commits, so under a steady stream of writes it
might never finish. Here the source connection opens a read transaction
first and keeps it for the whole copy: WAL gives it one fixed snapshot, the
steps read from that snapshot, and the writer thread keeps committing to the
WAL meanwhile (the WAL cannot be checkpointed past the snapshot until the
copy ends, so it grows for that long). Every write acknowledged before the
request arrived is committed, hence in the snapshot.

The copy runs in a worker thread on its own connection (never the writer
thread), a chunk of pages at a time with a short sleep between chunks so
that it does not hog the disk or the GIL. It is written to ``FILE.tmp``
(mode 0600), checked with ``PRAGMA quick_check``, switched to a rollback
journal (so that the file stands alone, with no -wal beside it), fsynced,
renamed over FILE, and the directory fsynced.

The HNSW index is derived data, but rebuilding it takes minutes at 100k
memories: its last save is copied to ``FILE.index/`` when the save's
sequence is at most the snapshot's (store/backup_index.py), and restore
installs it; otherwise restore removes the index and the daemon rebuilds it
from the vectors kept in SQLite (no re-embedding).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import trio
from reverie.daemon.datadir import DataDirLock, prepare
from reverie.errors import (
    Conflict,
    InvalidParams,
    NotReverieDatabase,
    ShuttingDown,
    StorageError,
)
from reverie.rpc.proto_backup import (
    Backup,
    BackupProgress,
    BackupProgressResult,
    BackupResult,
    RestoreResult,
)
from reverie.store import backup_index, schema, vectors
from reverie.store.connection import APPLICATION_ID, check_file, map_error, open_connection
from reverie.store.database import DB_FILENAME, Database
from reverie.store.durable import fsync_dir, fsync_file, storage_error
from reverie.store.indexer import INDEX_DIR

PAGES_PER_STEP = 1024  # 4 MiB at the default page size
PAUSE_S = 0.002  # between steps: let the writer and readers at the disk


@dataclass(slots=True)
class Progress:
    path: str = ""
    running: bool = False
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)


def _check_target(source: Path, target: Path, force: bool) -> None:
    if not target.is_absolute():
        raise InvalidParams(f"backup path must be absolute, not {str(target)!r}")
    resolved = target.resolve()
    src = source.resolve()
    if resolved.parent == src.parent and resolved.name.startswith(src.name):
        raise InvalidParams(f"refusing to write a backup over the live database ({target})")
    if not resolved.parent.is_dir():
        raise InvalidParams(f"no such directory: {resolved.parent}")
    if target.is_dir():
        raise InvalidParams(f"{target} is a directory")
    if target.exists() and not force:
        raise Conflict(f"{target} already exists; pass --force to replace it")


def backup_blocking(
    source: Path,
    target: Path,
    *,
    force: bool = False,
    verify: bool = True,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    pages_per_step: int = PAGES_PER_STEP,
    pause_s: float = PAUSE_S,
    index_dir: Path | None = None,
) -> BackupResult:
    """Copy the database at `source` into `target` (blocking; run in a worker thread).

    With `index_dir`, the saved vector index goes to ``target.index/`` when
    its sequence fits the snapshot (store/backup_index.py).
    """
    _check_target(source, target, force)
    progress = progress or Progress()
    stop = stop or threading.Event()
    started = time.monotonic()
    tmp = target.with_name(target.name + ".tmp")
    for leftover in (tmp, Path(f"{tmp}-journal")):
        leftover.unlink(missing_ok=True)  # a crashed earlier attempt
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise storage_error(e, f"cannot create {tmp}") from e
    try:
        src = open_connection(source, readonly=True)
        try:
            dst = apsw.Connection(str(tmp))
            try:
                # A temp file, fsynced once at the end: no journal, no syncs.
                dst.pragma("journal_mode", "off")
                dst.pragma("synchronous", "off")
                with src:  # one read transaction: one snapshot for the whole copy
                    seq = vectors.max_seq(src)
                    version = schema.schema_version(src)
                    count = int(src.execute("SELECT count(*) FROM memories").get)
                    pages, page_size = _copy(src, dst, progress, stop, pages_per_step, pause_s)
                # Stand-alone file: rollback journal, no -wal/-shm beside it.
                dst.pragma("journal_mode", "delete")
                if verify:
                    answer = [str(r[0]) for r in dst.execute("PRAGMA quick_check")]
                    if answer != ["ok"]:
                        raise StorageError(f"the backup failed its check: {answer[:3]}")
            finally:
                dst.close()
        finally:
            src.close()
        fsync_file(tmp)
        backup_index.remove_index(target)  # an older backup's, at this path
        index_seq = None
        if index_dir is not None:
            binding = backup_index.Binding(
                index_seq=0, db_seq=seq, db_memories=count, db_bytes=tmp.stat().st_size
            )
            index_seq = backup_index.copy_index(index_dir, target, binding)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except apsw.Error as e:
        _discard(tmp)
        raise map_error(e, "backup failed") from e
    except OSError as e:
        _discard(tmp)
        raise storage_error(e, f"backup to {target} failed") from e
    except BaseException:
        _discard(tmp)
        raise
    return BackupResult(
        path=str(target),
        pages=pages,
        page_size=page_size,
        bytes=target.stat().st_size,
        seq=seq,
        schema_version=version,
        memories=count,
        duration_ms=round((time.monotonic() - started) * 1000),
        verified=verify,
        index_included=index_seq is not None,
        index_seq=index_seq or 0,
    )


def _copy(
    src: apsw.Connection,
    dst: apsw.Connection,
    progress: Progress,
    stop: threading.Event,
    pages_per_step: int,
    pause_s: float,
) -> tuple[int, int]:
    page_size = int(src.pragma("page_size"))
    with dst.backup("main", src, "main") as b:
        while not b.step(pages_per_step):
            progress.total = b.page_count
            progress.done = b.page_count - b.remaining
            if stop.is_set():
                raise ShuttingDown("backup abandoned: the daemon is stopping")
            time.sleep(pause_s)
        progress.total = progress.done = pages = b.page_count
    return pages, page_size


def _discard(tmp: Path) -> None:
    for p in (tmp, Path(f"{tmp}-journal")):
        with contextlib.suppress(OSError):
            p.unlink()


# -- daemon side -----------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    lock: trio.Lock = field(default_factory=trio.Lock)
    progress: Progress = field(default_factory=Progress)


_states: weakref.WeakKeyDictionary[Database, _State] = weakref.WeakKeyDictionary()


async def serve(db: Database, req: Backup | BackupProgress) -> BackupResult | BackupProgressResult:
    state = _states.setdefault(db, _State())
    if isinstance(req, BackupProgress):
        p = state.progress
        elapsed = round((time.monotonic() - p.started) * 1000) if p.running else 0
        return BackupProgressResult(
            running=p.running, path=p.path, done=p.done, total=p.total, elapsed_ms=elapsed
        )
    if state.lock.locked():
        raise Conflict(f"a backup to {state.progress.path} is already running")
    async with state.lock:
        state.progress = progress = Progress(path=req.path, running=True)
        stop = threading.Event()
        try:
            return await trio.to_thread.run_sync(
                lambda: backup_blocking(
                    db.path,
                    Path(req.path),
                    force=req.force,
                    verify=req.verify,
                    progress=progress,
                    stop=stop,
                    index_dir=db.path.parent / INDEX_DIR if req.index else None,
                ),
                abandon_on_cancel=True,
            )
        except trio.Cancelled:
            stop.set()  # the thread stops at its next step and removes FILE.tmp
            raise
        finally:
            progress.running = False


# -- restore (daemon stopped) ------------------------------------------------------------


def restore_blocking(source: Path, data_dir: Path, *, force: bool = False) -> RestoreResult:
    """Verify the backup at `source` and install it as `data_dir`'s database.

    Holds the data dir's lock throughout, so it refuses while a daemon runs
    and no daemon can start half-way. The current database (with its -wal)
    is kept as ``reverie.db.before-restore-<ts>``; the vector index is
    replaced by the backup's (FILE.index/, verified) or removed, and the
    daemon catches it up or rebuilds it from SQLite at its next start.
    """
    started = time.monotonic()
    if not source.is_file():
        raise InvalidParams(f"no such file: {source}")
    wal = Path(f"{source}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise InvalidParams(
            f"{source} has a write-ahead log beside it ({wal}): it is a live database, not a "
            "backup; take one with `reverie backup`"
        )
    version = check_file(source)
    if version == 0:
        raise NotReverieDatabase(f"{source} is empty or not a reverie database")
    schema.refuse_newer(version)
    prepare(data_dir)
    target = data_dir / DB_FILENAME
    with DataDirLock(data_dir):
        if target.exists() and not force:
            raise Conflict(
                f"{target} exists; pass --force to replace it (it is kept as "
                f"{DB_FILENAME}.before-restore-<time>)"
            )
        tmp = data_dir / f".{DB_FILENAME}.restore.tmp"
        staging = data_dir / f".{INDEX_DIR}.restore.tmp"
        _discard(tmp)
        try:
            with (
                source.open("rb") as src,
                open(
                    os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb"
                ) as dst,
            ):
                shutil.copyfileobj(src, dst, 4 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            memories, seq = _verify_copy(tmp, version)
            staged = backup_index.stage_restore(source, staging, db_seq=seq, db_memories=memories)
        except OSError as e:
            _discard(tmp)
            raise storage_error(e, f"cannot copy {source} into {data_dir}") from e
        except BaseException:
            _discard(tmp)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        previous = ""
        if target.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = data_dir / f"{DB_FILENAME}.before-restore-{stamp}"
            n = 1
            while aside.exists():  # two restores within a second keep both
                aside = data_dir / f"{DB_FILENAME}.before-restore-{stamp}-{n}"
                n += 1
            # The -wal goes with its database: left behind, it would be
            # replayed onto the restored file and corrupt it.
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{target}{suffix}", f"{aside}{suffix}")
            previous = str(aside)
        os.replace(tmp, target)
        index_dir = data_dir / INDEX_DIR
        removed = index_dir.exists()
        shutil.rmtree(index_dir, ignore_errors=True)
        if staged:
            os.replace(staging, index_dir)
        fsync_dir(data_dir)
    return RestoreResult(
        path=str(target),
        source=str(source),
        schema_version=version,
        memories=memories,
        previous=previous,
        index_removed=removed,
        index_restored=staged,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


def _verify_copy(path: Path, version: int) -> tuple[int, int]:
    """Check the copy (not the user's file): ours to open read-write."""
    try:
        conn = apsw.Connection(str(path))
        try:
            app_id = int(conn.pragma("application_id"))
            if app_id != APPLICATION_ID or schema.schema_version(conn) != version:
                raise NotReverieDatabase(f"{path} is not a reverie database")
            answer = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
            if answer != ["ok"]:
                raise NotReverieDatabase(f"the backup fails integrity_check: {answer[:3]}")
            memories = int(conn.execute("SELECT count(*) FROM memories").get)
            seq = vectors.max_seq(conn)
        finally:
            conn.close()
    except apsw.Error as e:
        raise map_error(e, "the backup cannot be read") from e
    return memories, seq
