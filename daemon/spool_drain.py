"""Drain the hooks' spool into the event log: at start, then on a timer.

Each file's events go through the same store path as `post_events`
(store/events.py), in chunks, and the file is deleted only once all of them
are committed. A crash in between re-posts the file at the next drain, which
stores nothing twice (events are idempotent by key). A file with lines that
do not decode has its good events posted and is then moved to ``bad/`` with
a warning, so nothing is silently thrown away; a file with no event at all
goes there directly. Storage errors (a full disk) leave the file in place
for the next pass.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from reverie.errors import ReverieError, ShuttingDown
from reverie.rpc import spool
from reverie.store import events
from reverie.store.database import Database

log = logging.getLogger("reverie.daemon.spool")
CHUNK = 1000  # events per writer job
PROGRESS_EVERY_S = 5.0


@dataclass(slots=True)
class DrainReport:
    files: int = 0
    events: int = 0
    stored: int = 0
    duplicates: int = 0
    dropped: int = 0
    observations: int = 0
    bad_files: int = 0
    bad_lines: int = 0


class SpoolDrainer:
    def __init__(
        self,
        db: Database,
        directory: Path,
        *,
        interval_s: float,
        on_written: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.directory = directory
        self.interval_s = interval_s
        self.on_written = on_written
        self.passes = 0
        self.totals = DrainReport()
        self._pass_done = trio.Condition()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain now, then every interval (only once if the interval is 0)."""
        task_status.started()
        while True:
            try:
                await self.drain_once()
            except ShuttingDown:
                return
            except Exception:  # a bug here must not stop the daemon
                log.exception("spool: drain failed; trying again at the next pass")
            if self.interval_s <= 0:
                return
            await trio.sleep(self.interval_s)

    async def wait_passes(self, n: int) -> None:
        """Until at least ``n`` passes have completed (for tests and tools)."""
        async with self._pass_done:
            while self.passes < n:
                await self._pass_done.wait()

    async def drain_once(self) -> DrainReport:
        report = DrainReport()
        try:
            files = await trio.to_thread.run_sync(spool.pending, self.directory)
            if files:
                log.info("spool: draining %d file(s) from %s", len(files), self.directory)
            last_note = time.monotonic()
            for n, path in enumerate(files, 1):
                if not await self._drain_file(path, report):
                    break  # the store refused: keep the rest for the next pass
                if time.monotonic() - last_note >= PROGRESS_EVERY_S:
                    last_note = time.monotonic()
                    log.info("spool: %d/%d files, %d events so far", n, len(files), report.events)
            if report.files or report.bad_files:
                log.info(
                    "spool: drained files=%d events=%d stored=%d duplicates=%d dropped=%d "
                    "observations=%d bad_files=%d bad_lines=%d",
                    report.files,
                    report.events,
                    report.stored,
                    report.duplicates,
                    report.dropped,
                    report.observations,
                    report.bad_files,
                    report.bad_lines,
                )
        finally:
            self.passes += 1
            _add(self.totals, report)
            async with self._pass_done:
                self._pass_done.notify_all()
        return report

    async def _drain_file(self, path: Path, report: DrainReport) -> bool:
        """Post one file's events; False if the store refused (try again later)."""
        try:
            got = await trio.to_thread.run_sync(spool.read, path)
        except FileNotFoundError:
            return True  # drained by someone else meanwhile (a second daemon's leftover)
        except OSError as e:
            log.warning("spool: cannot read %s: %s", path, e)
            return True
        if not got.events and got.bad_lines:
            await self._set_aside(path, f"no event in {len(got.bad_lines)} line(s)")
            report.bad_files += 1
            report.bad_lines += len(got.bad_lines)
            return True
        for start in range(0, len(got.events), CHUNK):
            chunk = got.events[start : start + CHUNK]
            try:
                res = await events.post(self.db, chunk)
            except ShuttingDown:
                raise
            except ReverieError as e:
                log.warning("spool: %s not drained, will retry: %s", path.name, e.message)
                return False
            report.events += len(chunk)
            report.stored += res.stored
            report.duplicates += res.duplicates
            report.dropped += res.dropped
            report.observations += res.observations
            if res.observations:
                self.on_written()
        if got.bad_lines:
            lines = ", ".join(map(str, got.bad_lines[:10]))
            await self._set_aside(path, f"{len(got.bad_lines)} line(s) not events: {lines}")
            report.bad_files += 1
            report.bad_lines += len(got.bad_lines)
        else:
            try:
                await trio.to_thread.run_sync(_remove, path)
            except OSError as e:  # drained again next pass: idempotent
                log.warning("spool: cannot remove drained %s: %s", path.name, e)
        report.files += 1
        return True

    async def _set_aside(self, path: Path, why: str) -> None:
        bad = self.directory / spool.BAD_DIR
        target = bad / path.name.removeprefix(spool.TEMP_PREFIX)

        def move() -> None:
            bad.mkdir(mode=0o700, exist_ok=True)
            os.replace(path, target)

        try:
            await trio.to_thread.run_sync(move)
        except OSError as e:
            log.warning("spool: cannot move %s aside (%s): %s", path.name, why, e)
            return
        log.warning("spool: moved %s to %s: %s", path.name, bad, why)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _add(total: DrainReport, part: DrainReport) -> None:
    for name in DrainReport.__dataclass_fields__:
        setattr(total, name, getattr(total, name) + getattr(part, name))
