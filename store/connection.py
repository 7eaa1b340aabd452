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
    # checkpointed), so ask SQLite itself, read-only.
    try:
        probe = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            app_id = int(probe.pragma("application_id"))
            version = int(probe.pragma("user_version"))
            tables = int(probe.execute("SELECT count(*) FROM sqlite_schema").get)
        finally:
            probe.close()
    except apsw.Error as e:
        raise NotReverieDatabase(f"{path} cannot be read as a database: {e}") from e
    if app_id != APPLICATION_ID and tables:
        raise NotReverieDatabase(
            f"{path} is an SQLite database of another application; refusing to touch it"
        )
    return version


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
