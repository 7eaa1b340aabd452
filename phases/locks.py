"""TTL locks in SQLite with fencing tokens, for the dream phases.

A lock is one row of `locks` (schema _V1) per name, and the row is never
deleted: releasing sets `expires_at` to 0. So the row's `token` is both the
current lease's fencing token and the counter of every acquisition ever made
under that name; it only grows, across releases, expiries and takeovers, with
no second table to keep in step. (Deleting a row would restart its tokens at
1: nothing may delete from `locks`.)

Every function takes the connection, so it runs wherever the caller writes:
the daemon's writer thread (`db.writer.run(lambda c: acquire(c, ...))`) or a
plain connection. Each write is a single statement, atomic on its own and
correct inside the writer's savepoints. Time is passed in (`now`, unix
seconds): the expiry is compared by other processes, so it is wall-clock
time, and tests pass a clock driven by trio's MockClock.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import apsw
import trio
from reverie.errors import (
    Conflict,
    LockLost,
    ReverieError,
)

if TYPE_CHECKING:
    from reverie.store.database import Database
    from reverie.store.writer import Writer

log = logging.getLogger("reverie.phases.locks")

Clock = Callable[[], float]
"""Wall-clock time in unix seconds (default `time.time`)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One acquisition: valid while the row still has this token and is unexpired."""

    name: str
    owner: str
    token: int
    acquired_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A lock's row as `status` shows it; `held` is false once released or expired."""

    name: str
    owner: str
    token: int
    acquired_at: float
    expires_at: float
    held: bool


def acquire(conn: apsw.Connection, name: str, owner: str, ttl_s: float, now: float) -> Lease | None:
    """Take the lock if it is free, released or expired; None if someone holds it.

    The owner plays no part in the decision: an owner that holds the lock
    cannot take it a second time (that would be a phase overlapping itself).
    """
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    expires = now + ttl_s
    # One UPSERT: a new name starts at token 1; an existing row is taken over
    # only when expired (expires_at <= now, a released row has 0), its token
    # incremented. When the WHERE refuses, RETURNING yields no row.
    row: list[tuple[Any, ...]] = conn.execute(
        "INSERT INTO locks (name, owner, token, acquired_at, expires_at) VALUES (?, ?, 1, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = locks.token + 1, "
        "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at "
        "WHERE locks.expires_at <= excluded.acquired_at "
        "RETURNING token",
        (name, owner, now, expires),
    ).fetchall()
    if not row:
        return None
    return Lease(name=name, owner=owner, token=int(row[0][0]), acquired_at=now, expires_at=expires)


def renew(conn: apsw.Connection, lease: Lease, ttl_s: float, now: float) -> bool:
    """Push the expiry to now + ttl_s, only if the lease is still held and unexpired.

    An expired lease is not revived even if nobody took it meanwhile: between
    its expiry and now, check() said false, and a phase may have acted on that.
    """
    conn.execute(
        "UPDATE locks SET expires_at = ? WHERE name = ? AND token = ? AND expires_at > ?",
        (now + ttl_s, lease.name, lease.token, now),
    )
    return conn.changes() == 1


def release(conn: apsw.Connection, lease: Lease) -> bool:
    """Free the lock if this lease still has it; False (and nothing done) otherwise."""
    conn.execute(
        "UPDATE locks SET expires_at = 0 WHERE name = ? AND token = ? AND expires_at > 0",
        (lease.name, lease.token),
    )
    return conn.changes() == 1


def check(conn: apsw.Connection, lease: Lease, now: float) -> bool:
    """True while the lock has this lease's token and has not expired.

    A phase calls it in the same transaction as the change it commits, so a
    lease lost to a takeover can no longer write (fencing).
    """
    row = conn.execute(
        "SELECT 1 FROM locks WHERE name = ? AND token = ? AND expires_at > ?",
        (lease.name, lease.token, now),
    ).fetchall()
    return bool(row)


def holder(conn: apsw.Connection, name: str, now: float) -> LockInfo | None:
    """The lock's last holder and expiry (None if it was never taken)."""
    row: list[tuple[Any, ...]] = conn.execute(
        "SELECT owner, token, acquired_at, expires_at FROM locks WHERE name = ?", (name,)
    ).fetchall()
    if not row:
        return None
    owner, token, acquired_at, expires_at = row[0]
    return LockInfo(
        name=name,
        owner=str(owner),
        token=int(token),
        acquired_at=float(acquired_at),
        expires_at=float(expires_at),
        held=float(expires_at) > now,
    )


@dataclass(slots=True)
class Held:
    """The lease hold() keeps renewed; `lease` changes on every renewal."""

    lease: Lease
    lost: bool = False

    def check(self, conn: apsw.Connection, now: float) -> bool:
        return not self.lost and check(conn, self.lease, now)


@asynccontextmanager
async def hold(
    db: Database,
    name: str,
    owner: str,
    ttl_s: float,
    *,
    clock: Clock = time.time,
) -> AsyncIterator[Held]:
    """Acquire `name`, keep it renewed every ttl_s/3 while the body runs, release it.

    Raises Conflict (before the body) if someone else holds the lock. If a
    renewal finds the lease gone (expired because the loop stalled, or taken
    over), the body is cancelled and LockLost raised: the phase stops, and
    any commit it attempted meanwhile was refused by check(). The release runs
    shielded, so a cancelled run still frees the lock at once.
    """
    writer = db.writer
    now = clock()
    lease = await writer.run(lambda c: acquire(c, name, owner, ttl_s, now), single=True)
    if lease is None:
        now = clock()  # here, not in the reader thread: the clock may be trio's
        info = await db.read(lambda c: holder(c, name, now))
        who = f"{info.owner} (token {info.token}, until {info.expires_at:.0f})" if info else "?"
        raise Conflict(
            f"lock {name!r} is held by {who}",
            data={"lock": name, "owner": info.owner if info else None},
        )
    held = Held(lease)
    body = trio.CancelScope()  # what a lost lease cancels
    # The body's own exception is carried out of the nursery by hand: raised
    # inside it, it would reach the caller wrapped in an ExceptionGroup.
    error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep_renewed, writer, held, ttl_s, clock, body)
            try:
                with body:
                    yield held
            except BaseException as e:
                error = e
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            try:
                await writer.run(lambda c: release(c, held.lease), single=True)
            except ReverieError as e:
                # The TTL frees it anyway; nothing else to do.
                log.warning("releasing lock %s failed: %s", name, e.message)
    if error is not None:
        raise error
    if held.lost:
        raise LockLost(f"lock {name!r} (token {held.lease.token}) was lost while running")


async def _keep_renewed(
    writer: Writer, held: Held, ttl_s: float, clock: Clock, scope: trio.CancelScope
) -> None:
    while True:
        await trio.sleep(ttl_s / 3)
        now = clock()
        ok: bool | None
        try:
            renewal = functools.partial(renew, lease=held.lease, ttl_s=ttl_s, now=now)
            ok = await writer.run(renewal, single=True)
        except ReverieError as e:
            # A failed write is retried at the next tick; only an expiry
            # without a successful renewal loses the lease.
            log.warning("renewing lock %s failed: %s", held.lease.name, e.message)
            ok = None
        if ok:
            held.lease = replace(held.lease, expires_at=now + ttl_s)
        elif ok is False or clock() >= held.lease.expires_at:
            held.lost = True
            log.error("lock %s (token %d) lost", held.lease.name, held.lease.token)
            scope.cancel()
            return
