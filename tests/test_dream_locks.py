"""TTL locks with fencing tokens (phases/locks.py) on a real SQLite file.

The lock functions take `now`, so most tests pass times by hand; hold() runs
on the real Database (writer thread) under trio's MockClock, with the wall
clock derived from it. A killed process's lock is taken over after its TTL.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
import trio
import trio.testing
from reverie.errors import Conflict
from reverie.phases import locks
from reverie.phases.locks import Lease, LockLost, acquire, check, holder, release, renew
from reverie.store import schema
from reverie.store.connection import open_connection
from reverie.store.database import DB_FILENAME, Database

BASE = 1_800_000_000.0  # wall time at trio time 0


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[apsw.Connection]:
    c = open_connection(tmp_path / DB_FILENAME)
    schema.migrate(c)
    yield c
    c.close()


def test_acquire_only_when_free_or_expired(conn: apsw.Connection) -> None:
    a = acquire(conn, "rem", "daemon-a", 10, now=100)
    assert a == Lease("rem", "daemon-a", 1, 100, 110)
    assert acquire(conn, "rem", "daemon-b", 10, now=105) is None
    # Not even its own holder may take it twice (a phase overlapping itself).
    assert acquire(conn, "rem", "daemon-a", 10, now=109.9) is None
    # Another name is another lock.
    assert acquire(conn, "deep-sleep", "daemon-b", 10, now=105) is not None
    b = acquire(conn, "rem", "daemon-b", 10, now=110)  # expires_at <= now: expired
    assert b is not None and b.token == 2 and b.owner == "daemon-b"


def test_stale_lease_loses_everything_after_a_takeover(conn: apsw.Connection) -> None:
    a = acquire(conn, "rem", "a", 10, now=0)
    assert a is not None and check(conn, a, now=9.99)
    assert not check(conn, a, now=10)  # expired, even before anyone takes over
    b = acquire(conn, "rem", "b", 10, now=15)
    assert b is not None and b.token > a.token
    assert not check(conn, a, now=16)
    assert not renew(conn, a, 10, now=16)
    assert not release(conn, a)  # only the holder releases
    info = holder(conn, "rem", now=16)
    assert info is not None and (info.owner, info.token, info.held) == ("b", b.token, True)
    assert check(conn, b, now=16)


def test_renewal_extends_only_a_live_lease(conn: apsw.Connection) -> None:
    a = acquire(conn, "rem", "a", 10, now=0)
    assert a is not None
    for t in (8, 16, 24):  # each renewal before the previous expiry
        assert renew(conn, a, 10, now=t)
    assert check(conn, a, now=33.9)
    assert not renew(conn, a, 10, now=34)  # expired: not revived, even unclaimed
    assert not check(conn, a, now=34)


def test_tokens_grow_across_release_expiry_and_takeover(conn: apsw.Connection) -> None:
    tokens = []
    t = 0.0
    for i in range(6):
        lease = acquire(conn, "light-sleep", f"o{i % 2}", 5, now=t)
        assert lease is not None
        tokens.append(lease.token)
        if i % 2 == 0:
            assert release(conn, lease)
            assert not check(conn, lease, now=t)
            assert not release(conn, lease)  # twice is a no-op
            info = holder(conn, "light-sleep", now=t)
            assert info is not None and not info.held
            t += 1
        else:
            t += 5  # left to expire
    assert tokens == [1, 2, 3, 4, 5, 6]
    assert holder(conn, "never-taken", now=t) is None


def test_two_daemons_contend_on_one_file(tmp_path: Path) -> None:
    """Two connections in two threads: exactly one wins each round; no token twice."""
    path = tmp_path / DB_FILENAME
    first = open_connection(path)
    schema.migrate(first)
    second = open_connection(path)
    rounds = 40
    barrier = threading.Barrier(2)
    won: list[list[int]] = [[], []]

    def daemon(i: int, c: apsw.Connection) -> None:
        for r in range(rounds):
            barrier.wait()
            lease = acquire(c, "rem", f"d{i}", 60, now=float(r))
            barrier.wait()  # both tried before the winner releases
            if lease is not None:
                won[i].append(lease.token)
                assert check(c, lease, now=float(r))
                assert release(c, lease)

    threads = [threading.Thread(target=daemon, args=(i, c)) for i, c in enumerate((first, second))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    first.close()
    second.close()
    assert sorted(won[0] + won[1]) == list(range(1, rounds + 1))
    assert not set(won[0]) & set(won[1])


CHILD = """
import sys
from pathlib import Path
from reverie.phases.locks import acquire
from reverie.store.connection import open_connection
c = open_connection(Path(sys.argv[1]))
lease = acquire(c, "deep-sleep", "child", 60, now=1000.0)
print(lease.token, flush=True)
sys.stdin.read()  # "runs the phase" until killed
"""


def test_a_killed_holder_is_taken_over_after_the_ttl(conn: apsw.Connection, tmp_path: Path) -> None:
    first = acquire(conn, "deep-sleep", "old", 1, now=0)
    assert first is not None and release(conn, first)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / DB_FILENAME)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "2"
    finally:
        child.kill()  # SIGKILL: no finally, no release
        child.wait()
    assert acquire(conn, "deep-sleep", "restarted", 60, now=1059) is None
    info = holder(conn, "deep-sleep", now=1059)
    assert info is not None and (info.owner, info.held) == ("child", True)
    lease = acquire(conn, "deep-sleep", "restarted", 60, now=1060)
    assert lease is not None and lease.token == 3


# -- hold(): the async helper on the real Database, under MockClock ---------------


def run_with_db(tmp_path: Path, body: object) -> None:
    async def main() -> None:
        db = await Database.open(tmp_path)
        try:
            await body(db)  # type: ignore[operator]
        finally:
            await db.close()

    # Not autojump_threshold=0: the clock would jump to the body's next
    # deadline while a renewal waits for the writer thread, so virtual time
    # would run ahead of a write in flight (never so in real time).
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.1))


def wall() -> float:
    return BASE + trio.current_time()


async def other_can_take(db: Database, name: str) -> bool:
    now = wall()  # outside the lambda: it runs in the writer thread
    lease = await db.writer.run(lambda c: acquire(c, name, "intruder", 30, now))
    return lease is not None


def test_hold_renews_while_the_body_runs_and_releases(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        ttl = 30.0
        async with locks.hold(db, "rem", "a", ttl, clock=wall) as held:
            token = held.lease.token
            for _ in range(12):  # 120 s: four TTLs, alive only through renewals
                await trio.sleep(10)
                now = wall()
                assert await db.read(lambda c, now=now: held.check(c, now))
                assert not await other_can_take(db, "rem")
            assert held.lease.expires_at > wall()
            assert held.lease.token == token  # renewal keeps the token
        now = wall()
        info = await db.read(lambda c: holder(c, "rem", now))
        assert info is not None and not info.held and info.token == token
        assert await other_can_take(db, "rem")

    run_with_db(tmp_path, body)


def test_hold_refuses_a_held_lock_and_takes_over_after_the_ttl(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        # A daemon that acquired, then died: no renewals.
        now = wall()
        dead = await db.writer.run(lambda c: acquire(c, "rem", "dead", 60, now))
        assert dead is not None
        with pytest.raises(Conflict, match="held by dead"):
            async with locks.hold(db, "rem", "b", 60, clock=wall):
                raise AssertionError("the body must not run")
        await trio.sleep(60)
        async with locks.hold(db, "rem", "b", 60, clock=wall) as held:
            assert held.lease.token > dead.token
            now = wall()
            assert not await db.read(lambda c: check(c, dead, now))
            assert not await db.writer.run(lambda c: release(c, dead))
            assert await db.read(lambda c: held.check(c, now))

    run_with_db(tmp_path, body)


def test_a_lost_lease_cancels_the_body(tmp_path: Path) -> None:
    offset = 0.0  # the wall clock jumps (a suspend) without trio's clock

    def clock() -> float:
        return wall() + offset

    async def body(db: Database) -> None:
        nonlocal offset
        reached_end = False
        with pytest.raises(LockLost):
            async with locks.hold(db, "rem", "a", 30, clock=clock) as held:
                offset += 100  # past the TTL: another daemon takes over
                now = clock()
                b = await db.writer.run(lambda c: acquire(c, "rem", "b", 30, now))
                assert b is not None
                assert not await db.read(lambda c: held.check(c, now))
                await trio.sleep(1000)  # the next renewal notices and cancels this
                reached_end = True
        assert not reached_end and held.lost
        # a's release in the finally did not free b's lock.
        now = clock()
        info = await db.read(lambda c: holder(c, "rem", now))
        assert info is not None and (info.owner, info.held) == ("b", True)

    run_with_db(tmp_path, body)


def test_errors_and_cancellation_release_the_lock(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        with pytest.raises(ValueError, match="phase failed"):  # not an ExceptionGroup
            async with locks.hold(db, "rem", "a", 30, clock=wall):
                await trio.sleep(50)
                raise ValueError("phase failed")
        assert await other_can_take(db, "rem")
        with trio.move_on_after(45) as scope:
            async with locks.hold(db, "deep-sleep", "a", 30, clock=wall):
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert await other_can_take(db, "deep-sleep")

    run_with_db(tmp_path, body)
