"""The database as the daemon sees it: one writer thread, a pool of readers.

Writes go through the group-committing Writer. Reads run in worker threads,
each on its own reader connection (WAL gives every read a consistent
snapshot), so neither blocks the event loop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import apsw
import outcome
import trio
from reverie.errors import ReverieError
from reverie.rpc.protocol import (
    ExportResult,
    ForgetResult,
    ImportResult,
    Memory,
    MemoryRecord,
    Remember,
    RememberResult,
)
from reverie.store import memories, recalls, schema, vectors
from reverie.store.connection import (
    apply_size_cap,
    check_file,
    database_size,
    map_error,
    open_connection,
)
from reverie.store.writer import Writer

T = TypeVar("T")
DB_FILENAME = "reverie.db"
RECALL_IDLE_S = 0.2  # recalls are written once searches pause this long
RECALL_MAX_DELAY_S = 10.0  # or this long after the oldest one waiting
# Searches' recalls per writer job: small, so that a job holds the writer (and
# the GIL, binding its rows) briefly (bench_load, 64 clients, no dream: the 10 s
# flush's tenth of the run, search p99 55.6 ms with jobs of 32, 36.5 with 8).
RECALL_JOB = 8
# Or once this many searches' recalls wait: a bound on the memory a never-quiet
# stream of searches holds, not a pacing tool. Flushing every 128 searches put
# recall writes inside every burst of searches: p99 8.7 -> 20 ms in
# tests/bench/bench_search.py. Under a steady stream the backlog of
# RECALL_MAX_DELAY_S is written in jobs one after the other (below), so other
# writes interleave with it instead of waiting for one long transaction.
RECALL_FLUSH_AT = 2048
# Between two jobs of a flush the flusher pauses as long as the job took (at
# least RECALL_PAUSE_MIN_S, at most RECALL_PAUSE_MAX_S). Back to back, the
# jobs of 10 s of recalls under 50 searches/s wrote ~32 MB of WAL in 0.4 s (each
# recall rewrites its memory's page: recall_count), and the checkpoints they set
# off with them: every commit's fsync in that burst waited behind it (remember p99
# 25 -> 11 ms, search 36 -> 23 ms without recall writes, tests/bench/bench_load.py).
RECALL_PAUSE_MIN_S = 0.02
RECALL_PAUSE_MAX_S = 0.1
log = logging.getLogger("reverie.store.database")


class Database:
    def __init__(
        self, path: Path, *, readers: int = 4, synchronous: str = "FULL", max_db_mb: float = 0
    ) -> None:
        self.path = path
        self.max_db_mb = max_db_mb  # faults: [store] max_db_mb, 0 for no cap
        self.schema_version = 0
        self._writer = Writer(path, synchronous=synchronous)
        self._reader_count = readers
        self._free: list[apsw.Connection] = []
        self._read_slots = trio.Semaphore(readers)
        self._recalls: list[tuple[str, list[tuple[int, float]]]] = []
        self._recall_flush_pending = False
        self._recalls_since = self._last_recall = 0.0
        self._recalls_flushing: list[tuple[str, list[tuple[int, float]]]] = []
        self.recalls_writing = False  # a flush's jobs are being written (tests wait on it)
        self._recalls_full = trio.Event()  # RECALL_FLUSH_AT recalls wait

    @classmethod
    def open_blocking(cls, data_dir: Path, **kwargs: object) -> Database:
        """Check, migrate and open; blocking (call from a thread at start)."""
        path = data_dir / DB_FILENAME
        schema.refuse_newer(check_file(path))
        db = cls(path, **kwargs)  # type: ignore[arg-type]
        db._writer.start(schema.migrate)
        db.schema_version = schema.LATEST
        if db.max_db_mb:
            mb = db.max_db_mb
            db._writer.run_sync(lambda c: apply_size_cap(c, mb))
        try:
            db._free = [open_connection(path, readonly=True) for _ in range(db._reader_count)]
        except BaseException:
            db._writer.close()
            raise
        return db

    @classmethod
    async def open(cls, data_dir: Path, **kwargs: object) -> Database:
        return await trio.to_thread.run_sync(lambda: cls.open_blocking(data_dir, **kwargs))

    def close_blocking(self) -> None:
        batch = self._recalls_flushing + self._recalls  # a flush cut short, and the rest
        self._recalls, self._recalls_flushing = [], []
        if batch:
            try:
                self._writer.run_sync(lambda c: recalls.record_many(c, batch))
            except ReverieError as e:
                log.warning("recording recalls at close failed: %s", e.message)
        self._writer.close()
        for conn in self._free:
            conn.close()
        self._free.clear()

    async def close(self) -> None:
        await trio.to_thread.run_sync(self.close_blocking)

    def set_size_cap(self, max_db_mb: float) -> None:
        """faults: apply a new [store] max_db_mb (SIGHUP); returns at once, logs the result."""
        self.max_db_mb = max_db_mb

        def done(result: outcome.Outcome[object]) -> None:
            if isinstance(result, outcome.Value):
                log.info("store.max_db_mb=%g applied (%s pages)", max_db_mb, result.value)
            else:
                log.error("applying store.max_db_mb=%g failed: %s", max_db_mb, result)

        self._writer.submit(lambda c: apply_size_cap(c, max_db_mb), done)

    @property
    def writer(self) -> Writer:
        return self._writer

    async def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        async with self._read_slots:
            conn = self._free.pop()
            try:
                return await trio.to_thread.run_sync(_guarded, fn, conn)
            finally:
                self._free.append(conn)

    # -- memories -------------------------------------------------------------

    async def remember(self, req: Remember) -> RememberResult:
        # remember() writes one INSERT (its other statements only read).
        mid, created = await self._writer.run(lambda c: memories.remember(c, req), single=True)
        return RememberResult(id=mid, created=created)

    async def get(self, memory_id: int) -> Memory:
        return await self.read(lambda c: memories.get(c, memory_id))

    async def forget(self, memory_id: int, *, purge: bool, reason: str) -> ForgetResult:
        purged = await self._writer.run(
            lambda c: memories.forget(c, memory_id, purge=purge, reason=reason)
        )
        return ForgetResult(id=memory_id, state="forgotten", purged=purged)

    async def export_page(
        self, *, workspace: str | None, after_id: int, limit: int, include_forgotten: bool
    ) -> ExportResult:
        records, nxt = await self.read(
            lambda c: memories.export_page(
                c,
                workspace=workspace,
                after_id=after_id,
                limit=limit,
                include_forgotten=include_forgotten,
            )
        )
        return ExportResult(records=records, next_after_id=nxt)

    async def import_records(self, records: list[MemoryRecord]) -> ImportResult:
        added, skipped = await self._writer.run(lambda c: memories.import_records(c, records))
        return ImportResult(added=added, skipped=skipped)

    def record_recalls(self, query: str, hits: list[tuple[int, float]]) -> None:
        """Note which memories a search returned; the search does not wait for it.

        Recalls are statistics for the dreaming phases, not user data, and
        recording them is random-page writes (about 15 us of CPU a hit, plus
        the WAL they fill). So they wait in memory for a quiet moment: written
        once no search has come for RECALL_IDLE_S, or RECALL_MAX_DELAY_S after
        the oldest at the latest, or once RECALL_FLUSH_AT searches' wait, in
        small writer jobs one after the other, and at close. Under a stream of
        searches that keeps the bookkeeping off their tail latency; a crash
        loses at most RECALL_MAX_DELAY_S of recalls.
        """
        if not hits:
            return
        now = trio.current_time()
        if not self._recalls:
            self._recalls_since = now
        self._recalls.append((recalls.query_hash(query), hits))
        self._last_recall = now
        if len(self._recalls) >= RECALL_FLUSH_AT:
            self._recalls_full.set()
        if not self._recall_flush_pending:
            self._recall_flush_pending = True
            trio.lowlevel.spawn_system_task(self._flush_recalls_when_quiet)

    async def _flush_recalls_when_quiet(self) -> None:
        while self._recalls:
            while not self._recalls_full.is_set():
                quiet_at = self._last_recall + RECALL_IDLE_S
                with trio.move_on_at(min(quiet_at, self._recalls_since + RECALL_MAX_DELAY_S)):
                    await self._recalls_full.wait()
                now = trio.current_time()
                if now >= self._last_recall + RECALL_IDLE_S or (
                    now >= self._recalls_since + RECALL_MAX_DELAY_S
                ):
                    break
            batch, self._recalls = self._recalls, []
            self._recalls_full = trio.Event()
            self._recalls_flushing = batch  # close_blocking writes what is left of it
            # Small jobs, one at a time, so that other writes interleave. Queued
            # all at once they joined one writer group (up to 512 jobs, one
            # transaction): 10 s of recalls under 50 searches/s took 0.3-0.4 s to
            # write, and every remember and post_events queued behind them waited
            # for that commit (p99 ~300 ms in bench_load.py). One job at a time, a
            # write waits at most for one job (a few ms). Recalls that arrive
            # meanwhile are the next round's (this task stays the only flusher).
            self.recalls_writing = True
            while batch:
                part = batch[:RECALL_JOB]
                del batch[:RECALL_JOB]
                began = trio.current_time()
                try:
                    await self._writer.run(functools.partial(recalls.record_many, batch=part))
                except ReverieError as e:
                    log.warning("recording recalls failed: %s", e.message)
                if batch:  # spread the flush's I/O (RECALL_PAUSE_MIN_S)
                    took = trio.current_time() - began
                    await trio.sleep(min(RECALL_PAUSE_MAX_S, max(RECALL_PAUSE_MIN_S, took)))
                if self._recalls_flushing is not batch:
                    break  # closed meanwhile: close_blocking took the rest
            self.recalls_writing = False
        self._recall_flush_pending = False

    async def max_seq(self) -> int:
        return await self.read(vectors.max_seq)

    async def counts(self) -> tuple[dict[str, int], int]:
        return await self.read(memories.counts)

    def size_bytes(self) -> int:
        return database_size(self.path)


def _guarded(fn: Callable[[apsw.Connection], T], conn: apsw.Connection) -> T:
    try:
        return fn(conn)
    except apsw.Error as e:
        raise map_error(e, "read failed") from e
