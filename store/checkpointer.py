"""WAL checkpoints on their own thread, so that no commit waits for one.

SQLite's automatic checkpoint runs inside the commit that crossed the
threshold: that commit (and every write grouped with it, and every write
queued behind it) waited for tens of MB to be copied into the database and
fsynced: under a 64-client load the writes' p99 was 39-54 ms with them,
19 ms with checkpoints held off, in the same minutes. Here the writer connection's
automatic checkpoint is off; its WAL hook (called after each commit with the
WAL's size) wakes this thread, which runs a PASSIVE checkpoint on its own
connection. PASSIVE never blocks the writer or readers; the writer restarts
the WAL at its next transaction once a checkpoint has copied all of it.
What remains is the disk: the checkpoint's fsync still slows the commits'
own fsyncs while it runs (ext4 orders them), which no thread can hide.

If checkpoints fail (a full disk) or fall behind, the WAL grows; past
FALLBACK_FACTOR times the threshold the writer checkpoints itself, as
SQLite would have, so the WAL stays bounded whatever happens here.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import apsw
from reverie.store.connection import BUSY_TIMEOUT_MS

log = logging.getLogger("reverie.checkpointer")

# ~16 MB of WAL at 4 KiB pages. A checkpoint's fsync of the database still
# slows the commits' fsyncs while it runs; 4,000 and 16,000 pages measured
# alike under load (bench_load, remember p99 25-29 ms against 36-40 ms, within
# the runs' noise), and the smaller keeps the WAL and a crash's replay short.
THRESHOLD_PAGES = 4_000
FALLBACK_FACTOR = 4  # the writer checkpoints itself past this many thresholds


class Checkpointer:
    def __init__(self, path: Path, *, threshold_pages: int = THRESHOLD_PAGES) -> None:
        self._path = path
        self.threshold = threshold_pages
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._fallback_due = False
        self.wal_pages = 0  # the WAL's size after the last commit
        self.checkpoints = 0  # completed, for tests and figures
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="reverie-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the checkpoint under way, if any (the writer's close does the last)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def attach(self, writer: apsw.Connection) -> None:
        """Take over the writer connection's checkpoints (call on the writer's thread)."""
        writer.wal_autocheckpoint(0)
        writer.set_wal_hook(self._after_commit)

    def _after_commit(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        # On the writer's thread, inside its commit: only note and wake.
        self.wal_pages = pages
        if pages >= self.threshold:
            if pages >= FALLBACK_FACTOR * self.threshold or not self.alive:
                self._fallback_due = True
            else:
                self._wake.set()
        return apsw.SQLITE_OK

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def after_commit(self, writer: apsw.Connection) -> None:
        """On the writer's thread, after a commit: checkpoint there if this thread
        cannot keep the WAL bounded (stopped, dead, or far behind)."""
        if not self._fallback_due:
            return
        self._fallback_due = False
        log.warning("checkpoint_fallback by=writer")
        try:
            writer.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.Error as e:  # the commit itself succeeded: only report
            log.warning("checkpoint_failed by=writer error=%s", e)

    def _main(self) -> None:
        try:
            # Not open_connection(): its PRAGMA optimize may write, and a write
            # here would make the writer's next transaction fail as busy. A
            # checkpoint needs no settings (the file is in WAL mode already).
            conn = apsw.Connection(str(self._path), flags=apsw.SQLITE_OPEN_READWRITE)
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            # A connection that has read nothing does not know the file is in
            # WAL mode yet: its checkpoints would do nothing (and report -1).
            conn.pragma("journal_mode")
        except apsw.Error:
            log.exception("checkpointer cannot open the database: the writer checkpoints")
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    log_frames, _ = conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                    if log_frames < 0:  # not in WAL mode: nothing was checkpointed
                        raise apsw.Error("the database is not in WAL mode")
                    self.checkpoints += 1
                except apsw.Error as e:
                    # A full disk, an I/O error: the WAL keeps the data; retried
                    # at the next commit past the threshold.
                    self.failures += 1
                    log.warning("checkpoint_failed error=%s", e)
        finally:
            conn.close()
