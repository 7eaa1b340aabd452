"""The world state: one markdown document per workspace, replaced whole.

Every version is kept (a replace is an insert of version n + 1), so nothing
is lost to a careless overwrite and `if_version` can refuse a lost update:
a session read version 3, another wrote 4 meanwhile, the first one's write
"if_version 3" is refused with a conflict instead of silently winning.
"""

from __future__ import annotations

from typing import Any

import apsw
from reverie.errors import Conflict, NotFound
from reverie.rpc.proto_sessions import WorldSet, WorldState
from reverie.store.redaction import redact
from reverie.store.sessions import Clock, ts

_COLUMNS = "workspace, content, version, updated_at, updated_by"


def _state(row: tuple[Any, ...]) -> WorldState:
    ws, content, version, at, by = row
    return WorldState(
        workspace=ws, content=redact(content), version=version, updated_at=ts(at), updated_by=by
    )


def _empty(workspace: str) -> WorldState:
    return WorldState(workspace=workspace, content="", version=0, updated_at=None, updated_by="")


def current_version(conn: apsw.Connection, workspace: str) -> int:
    v = conn.execute("SELECT max(version) FROM world_state WHERE workspace = ?", (workspace,)).get
    return int(v or 0)


def get(conn: apsw.Connection, workspace: str, version: int | None = None) -> WorldState:
    """The current document (version 0 and empty if never set), or an earlier version."""
    if version is None:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM world_state WHERE workspace = ? ORDER BY version DESC LIMIT 1",
            (workspace,),
        ).fetchone()
        return _empty(workspace) if row is None else _state(row)
    if version == 0:
        return _empty(workspace)
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM world_state WHERE workspace = ? AND version = ?",
        (workspace, version),
    ).fetchone()
    if row is None:
        raise NotFound(
            f"the world state of {workspace!r} has no version {version}",
            data={"workspace": workspace, "version": version},
        )
    return _state(row)


def replace(conn: apsw.Connection, req: WorldSet, clock: Clock) -> WorldState:
    current = current_version(conn, req.workspace)
    if req.if_version is not None and req.if_version != current:
        raise Conflict(
            f"the world state of {req.workspace!r} is at version {current}, "
            f"not {req.if_version}: read it again and merge your changes",
            data={"workspace": req.workspace, "version": current},
        )
    conn.execute(
        "INSERT INTO world_state (workspace, version, content, updated_at, updated_by) "
        "VALUES (?, ?, ?, ?, ?)",
        (req.workspace, current + 1, redact(req.content), clock.now, redact(req.updated_by)),
    )
    return get(conn, req.workspace)
