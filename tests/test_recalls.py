"""Recalls are buffered, written once a second and at close (real database, MockClock)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing
from reverie.rpc.protocol import Remember
from reverie.store.database import RECALL_FLUSH_S, Database


def recall_counts(db: Database) -> list[tuple[int, int, int]]:
    # Through the writer: it runs after any recall job already queued.
    return db.writer.run_sync(
        lambda c: c.execute(
            "SELECT id, recall_count, distinct_queries FROM memories ORDER BY id"
        ).fetchall()
    )


def test_recalls_are_written_after_the_flush_delay_in_one_batch(tmp_path: Path) -> None:
    clock = trio.testing.MockClock()  # moves only when told to

    async def main() -> None:
        db = await Database.open(tmp_path)
        try:
            a = (await db.remember(Remember(content="alpha note"))).id
            b = (await db.remember(Remember(content="beta note"))).id
            db.record_recalls("alpha", [(a, 1.0)])
            db.record_recalls("ALPHA ", [(a, 0.9), (b, 0.5)])
            db.record_recalls("beta", [(b, 1.0)])
            await trio.testing.wait_all_tasks_blocked()  # the flush task is asleep
            clock.jump(RECALL_FLUSH_S * 0.9)
            await trio.testing.wait_all_tasks_blocked()
            assert await trio.to_thread.run_sync(recall_counts, db) == [(a, 0, 0), (b, 0, 0)]
            clock.jump(RECALL_FLUSH_S * 0.1)
            await trio.sleep(0)  # the run loop sees the deadline pass
            await trio.testing.wait_all_tasks_blocked()
            got = await trio.to_thread.run_sync(recall_counts, db)
            # "alpha" and "ALPHA " are one query; b was found by two.
            assert got == [(a, 2, 1), (b, 2, 2)]
        finally:
            await db.close()

    trio.run(main, clock=clock)


def test_close_writes_what_is_still_buffered(tmp_path: Path) -> None:
    async def main() -> int:
        db = await Database.open(tmp_path)
        mid = (await db.remember(Remember(content="gamma note"))).id
        db.record_recalls("gamma", [(mid, 1.0)])
        await db.close()  # before the flush delay
        return mid

    mid = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    async def reopen() -> list[tuple[int, int, int]]:
        db = await Database.open(tmp_path)
        try:
            return await trio.to_thread.run_sync(recall_counts, db)
        finally:
            await db.close()

    assert trio.run(reopen) == [(mid, 1, 1)]
