"""Opening SQLite connections the way reverie needs them.

A database file is checked *before* anything can write to it: a foreign or
corrupt file must be refused untouched, and even `PRAGMA journal_mode=wal`
rewrites the header. Only then are APSW's best-practice settings applied.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import apsw
import apsw.bestpractice
from reverie.errors import NotReverieDatabase, ReadOnlyStorage, StorageError

APPLICATION_ID = 0x52564552  # "RVER"
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 5000
WAL_AUTOCHECKPOINT_PAGES = 10_000
MAX_PAGES = 2**32 - 2  # SQLite's default max_page_count (faults: apply_size_cap)

# bestpractice.recommended minus library_logging (applied once per process).
_PER_CONNECTION = (
    apsw.bestpractice.connection_wal,
    apsw.bestpractice.connection_busy_timeout,
    apsw.bestpractice.connection_enable_foreign_keys,
    apsw.bestpractice.connection_dqs,
    apsw.bestpractice.connection_recursive_triggers,
    apsw.bestpractice.connection_optimize,
)
_library_configured = False


def _configure_library() -> None:
    global _library_configured
    if not _library_configured:
        apsw.bestpractice.library_logging()
        _library_configured = True


def check_file(path: Path) -> int:
    """Refuse a file that is not a reverie database, without writing to it.

    Returns the file's schema version (0 for a new or empty file), so that the
    caller can refuse a newer schema before anything opens it for writing.
    """
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return 0
    except PermissionError as e:
        raise ReadOnlyStorage(f"cannot read database {path}: {e.strerror}") from e
    if not header:
        return 0
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise NotReverieDatabase(
            f"{path} is not an SQLite database; refusing to touch it "
            "(move it aside or point data_dir elsewhere)"
        )
    app_id = int.from_bytes(header[68:72], "big")
    if app_id not in (0, APPLICATION_ID):
        raise NotReverieDatabase(
            f"{path} belongs to another application (application_id {app_id:#x}); "
            "refusing to touch it"
        )
    # The header may lag behind the WAL (a first transaction not yet
    # checkpointed), so ask SQLite itself, read-only. Even a read-only open of
    # a WAL-mode file creates -wal and -shm: a refused file gets them removed.
    created = [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if not p.exists()]
    try:
        probe = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        # Another process may hold a lock a moment (a plan worker recovering a
        # killed daemon's WAL): that is a busy database, not a foreign one.
        probe.set_busy_timeout(BUSY_TIMEOUT_MS)
        try:
            app_id = int(probe.pragma("application_id"))
            version = int(probe.pragma("user_version"))
            tables = int(probe.execute("SELECT count(*) FROM sqlite_schema").get)
        finally:
            probe.close()
    except apsw.Error as e:
        _remove_probe_files(created)
        raise NotReverieDatabase(f"{path} cannot be read as a database: {e}") from e
    if app_id != APPLICATION_ID and tables:
        _remove_probe_files(created)
        raise NotReverieDatabase(
            f"{path} is an SQLite database of another application; refusing to touch it"
        )
    return version


def _remove_probe_files(created: list[Path]) -> None:
    """faults: leave a refused database's directory as it was found.

    Only files the probe created, and only while the WAL is empty: a WAL with
    content was written by someone else meanwhile (a live owner) and stays.
    """
    wal = [p for p in created if p.name.endswith("-wal")]
    if any(p.exists() and p.stat().st_size for p in wal):
        return
    for p in created:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def open_connection(
    path: Path, *, synchronous: str = "FULL", readonly: bool = False
) -> apsw.Connection:
    """Open one connection (one per thread) with reverie's settings."""
    _configure_library()
    if readonly:
        flags = apsw.SQLITE_OPEN_READONLY
    else:
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    try:
        conn = apsw.Connection(str(path), flags=flags)
        for apply in _PER_CONNECTION:
            apply(conn)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        if not readonly:
            # WAL + FULL: every commit is fsynced before it is acknowledged.
            conn.pragma("synchronous", synchronous)
            # Checkpoint every ~40 MB of WAL instead of every 4 MB: under a
            # write burst each checkpoint costs the writer an extra fsync.
            conn.pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
    except apsw.Error as e:
        raise map_error(e, f"cannot open database {path}") from e
    return conn


def apply_size_cap(conn: apsw.Connection, max_mb: float) -> int:
    """faults: cap the database at `max_mb` MB (0: SQLite's own maximum); returns pages.

    SQLite answers SQLITE_FULL (StorageFull) to a write that would grow the
    file past max_page_count; the limit is never set below the pages in use,
    so a cap under the current size freezes the database at its size.
    """
    page = int(conn.pragma("page_size"))
    pages = int(max_mb * 1024 * 1024) // page if max_mb > 0 else MAX_PAGES
    return int(conn.pragma("max_page_count", max(1, pages)))


def map_error(e: BaseException, context: str = "database error") -> StorageError:
    """Translate an APSW or OS error into reverie's StorageError family."""
    from reverie.errors import StorageFull

    text = f"{context}: {e}"
    if isinstance(e, apsw.FullError):
        return StorageFull(f"{context}: the disk or database size limit is full")
    if isinstance(e, OSError) and e.errno == 28:
        return StorageFull(f"{context}: no space left on device")
    if isinstance(e, apsw.ReadOnlyError | apsw.CantOpenError | PermissionError):
        return ReadOnlyStorage(text)
    if isinstance(e, apsw.CorruptError | apsw.NotADBError):
        return NotReverieDatabase(f"{context}: the database file is corrupt ({e})")
    return StorageError(text)


def database_size(path: Path) -> int:
    """Bytes on disk: the database plus its WAL."""
    total = 0
    for p in (path, Path(f"{path}-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(p).st_size
    return total
