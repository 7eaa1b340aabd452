"""Claims: which session is working on which resource (a file, a folder, a name).

A claim is *held* while its session is active and not stale; that is
decided when read, so a crashed session's claims lapse by themselves after
the configured silence, with nothing to clean up on a timer. Ending a
session deletes its claims; a claim that lapsed is replaced by the next
session that claims an overlapping resource.

Resources are paths: a claim on ``src`` covers ``src/app.py``, so the two
conflict whichever was claimed first. Names that are not paths
(``db:prod``) simply never overlap anything but themselves.
"""

from __future__ import annotations

from typing import Any

import apsw
from reverie.errors import InvalidParams
from reverie.rpc.proto_sessions import Claim, ClaimInfo, ClaimResult, Release, ReleaseResult
from reverie.store import sessions
from reverie.store.redaction import redact
from reverie.store.sessions import Clock, ts

_JOINED = (
    "SELECT l.workspace, l.resource, l.session_id, l.claimed_at, l.note, "
    "s.description, s.harness FROM resource_locks l JOIN sessions s ON s.id = l.session_id "
)
# Held: the session is active and was seen since the cutoff.
_HELD = "s.status = 'active' AND s.last_seen_at >= ?"


def normalise(resource: str) -> str:
    """One spelling per resource: no blanks around, no ``.`` parts, no trailing or double ``/``.

    ``.`` alone is the whole working tree (it overlaps every relative path).
    """
    r = resource.strip()
    absolute = r.startswith("/")
    parts = [p for p in r.split("/") if p and p != "."]
    if not parts:
        if absolute:
            return "/"
        if r:
            return "."
        raise InvalidParams(f"not a resource: {resource!r}")
    return ("/" if absolute else "") + "/".join(parts)


def overlaps(a: str, b: str) -> bool:
    """Whether one resource is the other or contains it (path-wise)."""
    if a == b:
        return True
    if "." in (a, b):  # the whole working tree: every relative path
        return not a.startswith("/") and not b.startswith("/")
    if "/" in (a, b):  # the root: every absolute path
        return a.startswith("/") and b.startswith("/")
    return b.startswith(a + "/") or a.startswith(b + "/")


def _info(row: tuple[Any, ...]) -> ClaimInfo:
    ws, resource, sid, at, note, desc, harness = row
    return ClaimInfo(
        workspace=ws,
        resource=resource,
        session_id=sid,
        claimed_at=ts(at),
        note=redact(note),
        session_description=redact(desc),
        harness=harness,
    )


def held(
    conn: apsw.Connection,
    workspace: str,
    clock: Clock,
    *,
    resource: str | None = None,
    session_id: str | None = None,
) -> list[ClaimInfo]:
    """Held claims in a workspace: all, those overlapping `resource`, or one session's."""
    sql = _JOINED + f"WHERE l.workspace = ? AND {_HELD}"
    args: list[Any] = [workspace, clock.cutoff]
    if session_id is not None:
        sql += " AND l.session_id = ?"
        args.append(session_id)
    claims = [_info(r) for r in conn.execute(sql + " ORDER BY l.resource", args)]
    if resource is not None:
        r = normalise(resource)
        claims = [c for c in claims if overlaps(c.resource, r)]
    return claims


def claim(conn: apsw.Connection, req: Claim, clock: Clock) -> ClaimResult:
    """Grant the claim, or refuse it naming the live holders of overlapping claims.

    Claiming counts as a sign of life for the claiming session (it must be
    active). Claiming again is a no-op that keeps the first claim's time; a
    new note replaces the old one.
    """
    resource = normalise(req.resource)
    sessions.touch(conn, req.session_id, clock)
    live = held(conn, req.workspace, clock, resource=resource)
    others = [c for c in live if c.session_id != req.session_id]
    if others:
        return ClaimResult(granted=False, resource=resource, holders=others)
    mine = any(c.resource == resource for c in live)
    note = redact(req.note)
    if mine:
        if note:
            conn.execute(
                "UPDATE resource_locks SET note = ? WHERE workspace = ? AND resource = ?",
                (note, req.workspace, resource),
            )
        return ClaimResult(granted=True, resource=resource, already=True)
    _drop_lapsed(conn, req.workspace, resource, clock)
    conn.execute(
        "INSERT INTO resource_locks (workspace, resource, session_id, claimed_at, note) "
        "VALUES (?, ?, ?, ?, ?)",
        (req.workspace, resource, req.session_id, clock.now, note),
    )
    return ClaimResult(granted=True, resource=resource)


def _drop_lapsed(conn: apsw.Connection, workspace: str, resource: str, clock: Clock) -> None:
    """Delete lapsed claims overlapping `resource`, so that they cannot come back.

    A stale session that speaks again gets its claims back, unless someone
    claimed an overlapping resource meanwhile: then it lost them.
    """
    rows = conn.execute(
        "SELECT l.resource FROM resource_locks l JOIN sessions s ON s.id = l.session_id "
        f"WHERE l.workspace = ? AND NOT ({_HELD})",
        (workspace, clock.cutoff),
    ).fetchall()
    for (r,) in rows:
        if overlaps(str(r), resource):
            conn.execute(
                "DELETE FROM resource_locks WHERE workspace = ? AND resource = ?", (workspace, r)
            )


def release(conn: apsw.Connection, req: Release, clock: Clock) -> ReleaseResult:
    """Release a claim held by the session (or by anyone, with `force`).

    Releasing what one does not hold is not an error: `released` is False,
    and `holder` names whoever holds it, if anyone.
    """
    resource = normalise(req.resource)
    if req.session_id is None and not req.force:
        raise InvalidParams("release needs the session that holds the claim, or force")
    # NotFound for an unknown session; a live one is marked seen (so that a
    # stale session releasing its lapsed claim finds it its own again).
    if req.session_id is not None and sessions.get(conn, req.session_id, clock).status == "active":
        sessions.touch(conn, req.session_id, clock)
    live = held(conn, req.workspace, clock, resource=resource)
    holder = next((c for c in live if c.resource == resource), None)
    if req.force or (holder is not None and holder.session_id == req.session_id):
        conn.execute(
            "DELETE FROM resource_locks WHERE workspace = ? AND resource = ?",
            (req.workspace, resource),
        )
        return ReleaseResult(released=conn.changes() > 0, resource=resource)
    return ReleaseResult(released=False, resource=resource, holder=holder)
