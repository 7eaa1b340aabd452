"""Sessions: register, heartbeat, end, list, and their logs.

A session row may also be created by the event log (a hook's first event for
a session inserts it with the V1 columns only), so every column added here
has a default and every reader copes with an empty description.

Time is passed in (`Clock`), never read here: staleness is decided when
read, from `last_seen_at` and the configured silence, and tests choose the
moment explicitly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import apsw
from reverie.errors import Conflict, NotFound
from reverie.rpc.proto_sessions import (
    SessionInfo,
    SessionLog,
    SessionLogEntry,
    SessionStart,
)
from reverie.store.memories import json_text
from reverie.store.redaction import redact
from reverie.store.redaction_objects import redact_obj

COLUMNS = (
    "id, workspace, harness, description, progress, status, started_at, last_seen_at, "
    "ended_at, summary, metadata"
)
# The same columns for queries that join sessions as `s`.
S_COLUMNS = ", ".join(f"s.{c.strip()}" for c in COLUMNS.split(","))
_LOG_COLUMNS = "id, session_id, at, level, kind, message"


@dataclass(frozen=True, slots=True)
class Clock:
    """The moment a request is served, and how long a silence makes a session stale."""

    now: float
    stale_after: float

    @property
    def cutoff(self) -> float:
        """Sessions last seen before this are stale."""
        return self.now - self.stale_after


def ts(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def new_id(now: float) -> str:
    """A sortable, readable id: UTC time of creation and 32 random bits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + os.urandom(4).hex()


def row_to_info(row: tuple[Any, ...], clock: Clock) -> SessionInfo:
    sid, ws, harness, desc, progress, status, started, seen, ended, summary, meta = row
    return SessionInfo(
        id=sid,
        workspace=ws,
        harness=harness,
        # Redacted again on the way out, as memories are.
        description=redact(desc),
        progress=redact(progress),
        status=status,
        stale=status == "active" and seen < clock.cutoff,
        started_at=ts(started),
        last_seen_at=ts(seen),
        ended_at=None if ended is None else ts(ended),
        summary=None if summary is None else redact(summary),
        metadata=redact_obj(json.loads(meta)),
    )


def _row(conn: apsw.Connection, session_id: str) -> tuple[Any, ...]:
    row = conn.execute(f"SELECT {COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise NotFound(f"no session with id {session_id!r}", data={"session_id": session_id})
    return tuple(row)


def get(conn: apsw.Connection, session_id: str, clock: Clock) -> SessionInfo:
    return row_to_info(_row(conn, session_id), clock)


def start(conn: apsw.Connection, req: SessionStart, clock: Clock) -> tuple[SessionInfo, bool]:
    """Insert a session, or resume the one with this id (reopened if it had ended).

    A resumed session keeps its workspace and start time; a non-empty
    description or harness replaces the old one, and metadata keys merge.
    """
    sid = req.session_id or new_id(clock.now)
    desc = redact(req.description)
    meta = redact_obj(req.metadata) if req.metadata else {}
    old = conn.execute("SELECT metadata FROM sessions WHERE id = ?", (sid,)).fetchone()
    if old is None:
        conn.execute(
            "INSERT INTO sessions (id, workspace, harness, started_at, last_seen_at, status, "
            "description, metadata) VALUES (?, ?, ?, ?, ?, 'active', ?, ?)",
            (
                sid,
                req.workspace,
                req.harness,
                clock.now,
                clock.now,
                desc,
                json_text(meta, "metadata"),
            ),
        )
        return get(conn, sid, clock), True
    merged = {**json.loads(old[0]), **meta}
    conn.execute(
        "UPDATE sessions SET status = 'active', ended_at = NULL, last_seen_at = ?, "
        "description = CASE WHEN ? = '' THEN description ELSE ? END, "
        "harness = CASE WHEN ? = '' THEN harness ELSE ? END, metadata = ? WHERE id = ?",
        (clock.now, desc, desc, req.harness, req.harness, json_text(merged, "metadata"), sid),
    )
    return get(conn, sid, clock), False


def touch(conn: apsw.Connection, session_id: str, clock: Clock) -> tuple[Any, ...]:
    """Mark a session as seen now; it must exist and not have ended.

    Any sign of life (heartbeat, log line, claim) counts: a stale session
    that speaks again is live again.
    """
    row = _row(conn, session_id)
    status, ended = row[5], row[8]
    if status != "active":
        when = f" {age(clock.now - ended)} ago" if ended is not None else ""
        raise Conflict(
            f"session {session_id!r} has ended ({status}{when}); "
            "start it again with the same id to resume it",
            data={"session_id": session_id, "status": status},
        )
    conn.execute("UPDATE sessions SET last_seen_at = ? WHERE id = ?", (clock.now, session_id))
    return row


def heartbeat(
    conn: apsw.Connection, session_id: str, progress: str | None, clock: Clock
) -> SessionInfo:
    touch(conn, session_id, clock)
    if progress is not None:
        conn.execute(
            "UPDATE sessions SET progress = ? WHERE id = ?", (redact(progress), session_id)
        )
    return get(conn, session_id, clock)


def end(
    conn: apsw.Connection, session_id: str, summary: str, status: str, clock: Clock
) -> SessionInfo:
    """Complete or abandon a session; its claims are released with it.

    Ending an ended session again only replaces its summary (when one is
    given): a retried call is harmless.
    """
    row = _row(conn, session_id)
    text = redact(summary) if summary else None
    if row[5] == "active":
        conn.execute(
            "UPDATE sessions SET status = ?, ended_at = ?, last_seen_at = ?, "
            "summary = coalesce(?, summary) WHERE id = ?",
            (status, clock.now, clock.now, text, session_id),
        )
    elif text is not None:
        conn.execute("UPDATE sessions SET summary = ? WHERE id = ?", (text, session_id))
    conn.execute("DELETE FROM resource_locks WHERE session_id = ?", (session_id,))
    return get(conn, session_id, clock)


def active(
    conn: apsw.Connection, workspace: str | None, clock: Clock, limit: int
) -> list[SessionInfo]:
    """Active sessions, live ones first, then stale ones; most recently seen first."""
    where, args = _workspace(workspace)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM sessions WHERE status = 'active' {where} "
        "ORDER BY last_seen_at < ?, last_seen_at DESC LIMIT ?",
        (*args, clock.cutoff, limit),
    )
    return [row_to_info(r, clock) for r in rows]


def recent(
    conn: apsw.Connection, workspace: str | None, clock: Clock, limit: int
) -> list[SessionInfo]:
    """Ended sessions, the most recently ended first."""
    where, args = _workspace(workspace)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM sessions WHERE status != 'active' {where} "
        "ORDER BY ended_at DESC LIMIT ?",
        (*args, limit),
    )
    return [row_to_info(r, clock) for r in rows]


def every(
    conn: apsw.Connection, workspace: str | None, clock: Clock, limit: int
) -> list[SessionInfo]:
    where, args = _workspace(workspace)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM sessions WHERE 1 {where} ORDER BY last_seen_at DESC LIMIT ?",
        (*args, limit),
    )
    return [row_to_info(r, clock) for r in rows]


def _workspace(workspace: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("AND workspace = ?", (workspace,)) if workspace is not None else ("", ())


# -- logs ----------------------------------------------------------------------


def _entry(row: tuple[Any, ...]) -> SessionLogEntry:
    lid, sid, at, level, kind, message = row
    return SessionLogEntry(
        id=lid, session_id=sid, at=ts(at), level=level, kind=kind, message=redact(message)
    )


def log(conn: apsw.Connection, req: SessionLog, clock: Clock) -> SessionLogEntry:
    """Append a line to a session's log; a live session is also marked seen.

    An ended session still takes lines (a late note about what it did)
    without being reopened.
    """
    row = _row(conn, req.session_id)
    if row[5] == "active":
        conn.execute(
            "UPDATE sessions SET last_seen_at = ? WHERE id = ?", (clock.now, req.session_id)
        )
    message = redact(req.message)
    conn.execute(
        "INSERT INTO session_logs (session_id, at, level, kind, message) VALUES (?, ?, ?, ?, ?)",
        (req.session_id, clock.now, req.level, req.kind, message),
    )
    return _entry(
        (conn.last_insert_rowid(), req.session_id, clock.now, req.level, req.kind, message)
    )


def logs(
    conn: apsw.Connection, session_id: str, *, limit: int, after_id: int | None
) -> list[SessionLogEntry]:
    """Oldest first: the last `limit` lines, or the first `limit` after `after_id`."""
    _row(conn, session_id)
    if after_id is None:
        rows = list(
            conn.execute(
                f"SELECT {_LOG_COLUMNS} FROM session_logs WHERE session_id = ? "
                "ORDER BY id DESC LIMIT ?",
                (session_id, limit),
            )
        )
        rows.reverse()
    else:
        rows = list(
            conn.execute(
                f"SELECT {_LOG_COLUMNS} FROM session_logs WHERE session_id = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (session_id, after_id, limit),
            )
        )
    return [_entry(r) for r in rows]


def age(seconds: float) -> str:
    """A short, timezone-free age: 45s, 12m, 3h, 5d."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"
