"""Recalls wait for a quiet moment, at most RECALL_MAX_DELAY_S, and are written at close.

A real database; trio's MockClock moves only when the test says so.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing
from reverie.rpc.protocol import Remember
from reverie.store.database import (
    RECALL_FLUSH_AT,
    RECALL_IDLE_S,
    RECALL_JOB,
    RECALL_MAX_DELAY_S,
    RECALL_PAUSE_MAX_S,
    RECALL_PAUSE_MIN_S,
    Database,
)


def recall_counts(db: Database) -> list[tuple[int, int, int]]:
    # Through the writer: it runs after any recall job already queued.
    return db.writer.run_sync(
        lambda c: c.execute(
            "SELECT id, recall_count, distinct_queries FROM memories ORDER BY id"
        ).fetchall()
    )


def _counts_after_reopen(tmp_path: Path) -> list[tuple[int, int, int]]:
    """The recall counts a new Database finds on disk (what a close left)."""

    async def reopen() -> list[tuple[int, int, int]]:
        db = await Database.open(tmp_path)
        try:
            return await trio.to_thread.run_sync(recall_counts, db)
        finally:
            await db.close()

    return trio.run(reopen)


async def advance(db: Database, clock: trio.testing.MockClock, seconds: float) -> None:
    await trio.testing.wait_all_tasks_blocked()  # the flush task is asleep
    clock.jump(seconds)
    await trio.sleep(0)  # the run loop sees the deadline pass
    await trio.testing.wait_all_tasks_blocked()
    while db.recalls_writing:  # a flush began: its jobs go to the writer one by one,
        clock.jump(RECALL_PAUSE_MAX_S)  # with a pause between two
        await trio.sleep(0)


def test_recalls_are_written_once_searches_pause(tmp_path: Path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        db = await Database.open(tmp_path)
        try:
            a = (await db.remember(Remember(content="alpha note"))).id
            b = (await db.remember(Remember(content="beta note"))).id
            db.record_recalls("alpha", [(a, 1.0)])
            db.record_recalls("ALPHA ", [(a, 0.9), (b, 0.5)])
            db.record_recalls("beta", [(b, 1.0)])
            await advance(db, clock, RECALL_IDLE_S / 2)
            assert await trio.to_thread.run_sync(recall_counts, db) == [(a, 0, 0), (b, 0, 0)]
            await advance(db, clock, RECALL_IDLE_S)
            got = await trio.to_thread.run_sync(recall_counts, db)
            # "alpha" and "ALPHA " are one query; b was found by two.
            assert got == [(a, 2, 1), (b, 2, 2)]
        finally:
            await db.close()

    trio.run(main, clock=clock)


def test_a_stream_of_searches_still_writes_within_the_max_delay(tmp_path: Path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        db = await Database.open(tmp_path)
        try:
            mid = (await db.remember(Remember(content="gamma note"))).id
            step = RECALL_IDLE_S / 2  # never quiet long enough
            n = 0
            while n * step < RECALL_MAX_DELAY_S - step:
                db.record_recalls(f"query {n}", [(mid, 1.0)])
                n += 1
                await advance(db, clock, step)
            assert await trio.to_thread.run_sync(recall_counts, db) == [(mid, 0, 0)]
            db.record_recalls(f"query {n}", [(mid, 1.0)])
            n += 1
            # Still not quiet, but the oldest has now waited RECALL_MAX_DELAY_S.
            await advance(db, clock, RECALL_IDLE_S * 0.9)
            assert await trio.to_thread.run_sync(recall_counts, db) == [(mid, n, n)]
        finally:
            await db.close()

    trio.run(main, clock=clock)


def test_close_writes_what_is_still_buffered(tmp_path: Path) -> None:
    async def main() -> int:
        db = await Database.open(tmp_path)
        mid = (await db.remember(Remember(content="delta note"))).id
        db.record_recalls("delta", [(mid, 1.0)])
        await db.close()  # before the flush delay
        return mid

    mid = trio.run(main, clock=trio.testing.MockClock())
    assert _counts_after_reopen(tmp_path) == [(mid, 1, 1)]


def test_a_backlog_of_recalls_is_written_without_waiting_for_quiet(tmp_path: Path) -> None:
    # Under a steady stream of searches the backlog is written in parts of
    # RECALL_FLUSH_AT, not all at once every RECALL_MAX_DELAY_S.
    clock = trio.testing.MockClock()

    async def main() -> None:
        db = await Database.open(tmp_path)
        try:
            mid = (await db.remember(Remember(content="delta note"))).id
            for n in range(RECALL_FLUSH_AT - 1):
                db.record_recalls(f"query {n}", [(mid, 1.0)])
            await advance(db, clock, RECALL_IDLE_S / 2)
            assert await trio.to_thread.run_sync(recall_counts, db) == [(mid, 0, 0)]
            db.record_recalls("one more", [(mid, 1.0)])
            await advance(db, clock, 0)  # no time passes: the count alone starts it
            n = RECALL_FLUSH_AT
            assert await trio.to_thread.run_sync(recall_counts, db) == [(mid, n, n)]
        finally:
            await db.close()

    trio.run(main, clock=clock)


async def _flushing(tmp_path: Path, clock: trio.testing.MockClock) -> tuple[Database, int]:
    """A database with 3 jobs' worth of recalls of one memory, their flush begun."""
    db = await Database.open(tmp_path)
    mid = (await db.remember(Remember(content="a recalled note"))).id
    for n in range(3 * RECALL_JOB):
        db.record_recalls(f"query {n}", [(mid, 1.0)])
    await trio.testing.wait_all_tasks_blocked()
    clock.jump(RECALL_IDLE_S)  # quiet: the flush starts
    return db, mid


def test_a_flush_pauses_between_its_jobs(tmp_path: Path) -> None:
    """A backlog goes to the writer one job at a time with a pause after each,
    so that its I/O does not come as one burst (load, issue 7)."""
    clock = trio.testing.MockClock()

    async def main() -> None:
        db, _ = await _flushing(tmp_path, clock)
        try:
            written = []
            while True:
                await trio.testing.wait_all_tasks_blocked()
                # Time stands still: only whole jobs are written, then it waits.
                count = (await trio.to_thread.run_sync(recall_counts, db))[0][1]
                written.append(count)
                if count == 3 * RECALL_JOB:
                    break
                await trio.sleep(0)
                clock.jump(RECALL_PAUSE_MIN_S / 2)
                await trio.testing.wait_all_tasks_blocked()
                assert (await trio.to_thread.run_sync(recall_counts, db))[0][1] == count
                clock.jump(RECALL_PAUSE_MAX_S)
            assert written == [RECALL_JOB, 2 * RECALL_JOB, 3 * RECALL_JOB]
            while db.recalls_writing:  # the last job's answer, then the flusher is done
                await trio.sleep(0)
        finally:
            await db.close()

    trio.run(main, clock=clock)


def test_close_during_a_flush_pause_writes_the_rest_once(tmp_path: Path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> int:
        db, mid = await _flushing(tmp_path, clock)
        await trio.testing.wait_all_tasks_blocked()
        assert db.recalls_writing  # one job written, the flusher pauses
        await db.close()
        clock.jump(RECALL_PAUSE_MAX_S)  # the flusher wakes after the close
        await trio.testing.wait_all_tasks_blocked()
        return mid

    mid = trio.run(main, clock=clock)
    n = 3 * RECALL_JOB
    assert _counts_after_reopen(tmp_path) == [(mid, n, n)]
