"""The single writer thread, with group commit.

SQLite allows one writer at a time, and every commit costs an fsync. So all
writes go to one thread that owns the only write connection: it takes every
job waiting in its queue, runs them in one transaction (each job inside its
own savepoint, so one failing job does not undo the others), commits once,
and only then answers each caller. Callers that arrive while a commit is in
progress form the next group, which is what makes durable writes cheap.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import apsw
import outcome
import trio
from reverie.daemon.metrics import Histogram  # metrics
from reverie.errors import ReverieError, ShuttingDown, StorageError
from reverie.store.checkpointer import Checkpointer
from reverie.store.connection import map_error, open_connection

T = TypeVar("T")
WriteFn = Callable[[apsw.Connection], Any]
log = logging.getLogger("reverie.store.writer")


@dataclass(slots=True)
class _Job:
    fn: WriteFn
    # Either a callback (blocking callers), or the trio task to wake up.
    done: Callable[[outcome.Outcome[Any]], None] | None = None
    task: trio.lowlevel.Task | None = None
    token: trio.lowlevel.TrioToken | None = None
    # True when the job writes with at most one statement: SQLite makes a
    # statement atomic by itself, so the job needs no savepoint of its own.
    single: bool = False
    queued: float = 0.0  # metrics: perf_counter() when submitted


def _reschedule_all(wakeups: list[tuple[trio.lowlevel.Task, outcome.Outcome[Any]]]) -> None:
    for task, result in wakeups:
        trio.lowlevel.reschedule(task, result)


_STOP = object()


class Writer:
    """Owns the write connection; run `fn(conn)` jobs in grouped transactions."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        max_batch: int = 512,
        commit_delay_s: float = 0.0002,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._commit_delay = commit_delay_s
        self._last_group = 1
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._checkpointer: Checkpointer | None = None
        self.commits = 0
        self.jobs = 0
        # metrics: observed on the writer thread only (daemon/metrics.py)
        self.write_latency = Histogram()  # one job: submitted until its group committed
        self.commit_latency = Histogram()  # one group transaction, fsync included

    # -- lifecycle ----------------------------------------------------------

    def start(self, setup: WriteFn | None = None) -> Any:
        """Open the connection in the writer thread, run `setup` there, and return its value."""
        started: queue.SimpleQueue[outcome.Outcome[Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._main, args=(setup, started), name="reverie-writer", daemon=True
        )
        self._thread.start()
        return started.get().unwrap()

    def close(self) -> None:
        """Finish every queued job, then close the connection (blocking)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Jobs waiting for the writer thread (metrics)."""
        return self._queue.qsize()

    # -- submitting -----------------------------------------------------------

    def submit(self, fn: WriteFn, done: Callable[[outcome.Outcome[Any]], None]) -> None:
        if self._closed:
            done(outcome.Error(ShuttingDown("the database is closing")))
            return
        self._queue.put(_Job(fn, done=done, queued=time.perf_counter()))

    async def run(self, fn: Callable[[apsw.Connection], T], *, single: bool = False) -> T:
        """Run `fn` in the next group; return once its transaction has committed.

        `single`: `fn` writes with at most one statement (reads aside), so it
        can skip its savepoint. Not cancellable once submitted: the caller
        must learn whether the write is durable, so a cancel waits for the
        commit (which is quick).
        """
        if self._closed:
            raise ShuttingDown("the database is closing")
        job = _Job(
            fn,
            task=trio.lowlevel.current_task(),
            token=trio.lowlevel.current_trio_token(),
            single=single,
            queued=time.perf_counter(),  # metrics
        )
        self._queue.put(job)
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    def run_sync(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Blocking variant for code outside trio (tools, tests)."""
        box: queue.SimpleQueue[outcome.Outcome[Any]] = queue.SimpleQueue()
        self.submit(fn, box.put)
        value: T = box.get().unwrap()
        return value

    # -- the thread -------------------------------------------------------------

    def _main(
        self, setup: WriteFn | None, started: queue.SimpleQueue[outcome.Outcome[Any]]
    ) -> None:
        try:
            conn = open_connection(self._path, synchronous=self._synchronous)
            value = setup(conn) if setup is not None else None
        except BaseException as e:  # reported to start(), which re-raises
            started.put(outcome.Error(e))
            return
        checkpointer = Checkpointer(self._path)
        checkpointer.attach(conn)
        checkpointer.start()
        self._checkpointer = checkpointer
        started.put(outcome.Value(value))
        try:
            self._loop(conn)
        finally:
            checkpointer.stop()
            try:
                conn.close()
            except apsw.Error:
                log.exception("closing the write connection failed")

    def _loop(self, conn: apsw.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[Any] = [first]
            stopping = self._gather(batch)
            self._last_group = len(batch)
            self._commit(conn, batch)

    def _gather(self, batch: list[Any]) -> bool:
        """Add queued jobs to the group; True if the stop marker was met.

        While concurrent writers are about (the last group had more jobs than
        are queued now), wait up to the commit delay for the ones still on
        their way: one fsync then covers them all. A lone writer never waits.
        """
        deadline = time.monotonic() + self._commit_delay
        while len(batch) < self._max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if len(batch) >= self._last_group or remaining <= 0:
                    return False
                try:
                    nxt = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return False
            if nxt is _STOP:
                return True
            batch.append(nxt)
        return False

    def _commit(self, conn: apsw.Connection, batch: list[_Job]) -> None:
        results: list[outcome.Outcome[Any]] = []
        began = time.perf_counter()  # metrics
        lost: BaseException | None = None  # faults: see _group_lost
        try:
            with conn:  # one transaction for the group
                for job in batch:
                    results.append(self._one(conn, job))
                    if not conn.in_transaction:
                        lost = _group_lost(results[-1])
                        break
        except apsw.Error as e:  # the commit itself failed: nothing is durable
            err = lost or map_error(_root_error(e), "commit failed")
            results = [outcome.Error(err) for _ in batch]
        self.commits += 1
        self.jobs += len(batch)
        committed = time.perf_counter()  # metrics
        if self._checkpointer is not None:
            self._checkpointer.after_commit(conn)
        self.commit_latency.observe(committed - began)
        for job in batch:
            self.write_latency.observe(committed - job.queued)
        # Wake each event loop once per group, not once per job: every
        # run_sync_soon from a thread costs a syscall on trio's wakeup socket.
        wakeups: dict[trio.lowlevel.TrioToken, list[tuple[trio.lowlevel.Task, Any]]] = {}
        for job, result in zip(batch, results, strict=True):
            if job.done is not None:
                job.done(result)
            elif job.task is not None and job.token is not None:
                wakeups.setdefault(job.token, []).append((job.task, result))
        for token, pairs in wakeups.items():
            token.run_sync_soon(_reschedule_all, pairs)

    @staticmethod
    def _one(conn: apsw.Connection, job: _Job) -> outcome.Outcome[Any]:
        try:
            if job.single:
                value = job.fn(conn)
            else:
                with conn:  # a savepoint: this job's changes only
                    value = job.fn(conn)
        except ReverieError as e:
            return outcome.Error(e)
        except apsw.Error as e:
            return outcome.Error(map_error(_root_error(e), "write failed"))
        except Exception as e:
            log.exception("write job failed")
            return outcome.Error(e)
        return outcome.Value(value)


# -- faults: a group SQLite rolled back by itself ---------------------------------


def _root_error(e: apsw.Error) -> apsw.Error:
    """The error that started it: after SQLITE_FULL (or an I/O error) SQLite has
    already rolled the transaction back, so the savepoint's own rollback fails
    with an SQLError whose __context__ is the real cause."""
    while isinstance(e.__context__, apsw.Error):
        e = e.__context__
    return e


def _group_lost(result: outcome.Outcome[Any]) -> BaseException:
    """Why a group's transaction vanished mid-group (SQLite rolls back the whole
    transaction on SQLITE_FULL, IOERR or NOMEM): every job in it failed, and
    jobs after it must not run in autocommit, where each would commit alone
    while the group reports failure."""
    if isinstance(result, outcome.Error) and isinstance(result.error, StorageError):
        return result.error
    return StorageError("write failed: SQLite rolled the transaction back")
