"""Protocol of `reverie backup`: an online snapshot of the database, and its progress.

The daemon writes the snapshot itself (it owns the database), so ``path`` is
absolute and must be writable by the daemon's user. Restore needs no RPC: it
runs with the daemon stopped (rpc/cli_backup.py).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct
from reverie.rpc._base import _Request


class Backup(_Request, tag="backup"):
    """Snapshot the database into ``path`` (absolute), through SQLite's backup API."""

    # No NUL: the OS refuses it in a path (it was an internal error, found by fuzzing).
    path: Annotated[str, Meta(min_length=2, max_length=4096, pattern=r"^/[^\x00]*$")]
    force: bool = False  # replace an existing file
    verify: bool = True  # run PRAGMA quick_check on the copy before publishing it
    index: bool = True  # also copy the saved vector index to ``path.index/`` if it fits


class BackupProgress(_Request, tag="backup_progress"):
    """How far the running backup (if any) has got."""


class BackupResult(Struct, kw_only=True):
    path: str
    pages: int  # pages copied (the snapshot's size in pages)
    page_size: int
    bytes: int  # the file's size
    seq: int  # the memories' change sequence the snapshot reflects
    schema_version: int
    memories: int  # memories in the snapshot (all states)
    duration_ms: int
    verified: bool
    # The saved vector index, copied to ``<path>.index/`` when its sequence is
    # at most the snapshot's (the daemon catches it up after a restore);
    # otherwise restore has the daemon rebuild it from SQLite.
    index_included: bool = False
    index_seq: int = 0


class BackupProgressResult(Struct, kw_only=True):
    running: bool
    path: str = ""
    done: int = 0  # pages copied so far
    total: int = 0  # pages in the snapshot
    elapsed_ms: int = 0


class RestoreResult(Struct, kw_only=True):
    """What `reverie restore` did (no RPC: the daemon is stopped)."""

    path: str  # the database installed
    source: str  # the backup it came from
    schema_version: int
    memories: int
    previous: str  # where the replaced database was kept ("" if there was none)
    index_removed: bool  # the previous vector index was removed
    index_restored: bool = False  # the backup's index installed (else rebuilt at start)
    duration_ms: int
