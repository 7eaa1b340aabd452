"""Protocol for sessions, the world state, claims, the sitrep and the briefing.

Hot path for hooks: msgspec and the standard library only.

A session is *stale* once it has been silent (no start, heartbeat, log or
claim) for longer than the daemon's ``[sessions] stale_after_s``. Staleness
is computed when read, never stored: a stale session that speaks again is
live again. Claims belong to sessions: a claim is held only while its session
is active and not stale.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct
from reverie.rpc._base import SQLITE_MAX_INT, Limit, Workspace, _Request

# Claude Code's additionalContext is capped at 10,000 characters.
BRIEF_MAX_CHARS = 10_000
# A sitrep is for people as well as agents: it may be longer than a brief.
SITREP_MAX_CHARS = 100_000

# Printable, no whitespace: ids are typed on command lines and put in text.
SessionId = Annotated[str, Meta(pattern=r"^[^\x00-\x20\x7f]{1,200}$")]
Harness = Annotated[str, Meta(max_length=64)]
Note = Annotated[str, Meta(max_length=10_000)]
LongText = Annotated[str, Meta(max_length=100_000)]
Resource = Annotated[str, Meta(min_length=1, max_length=1024)]
LogLevel = Literal["debug", "info", "warning", "error"]
LogKind = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
EndStatus = Literal["completed", "abandoned"]
Version = Annotated[int, Meta(ge=0, le=SQLITE_MAX_INT)]
Budget = Annotated[int, Meta(ge=200, le=BRIEF_MAX_CHARS)]

# --- sessions ------------------------------------------------------------------


class SessionStart(_Request, tag="session_start"):
    """Register a session (or resume one: the same id again reopens it)."""

    workspace: Workspace
    session_id: SessionId | None = None  # None: the daemon makes one up
    harness: Harness = ""
    description: Note = ""  # what the session sets out to do
    metadata: dict[str, Any] = {}


class SessionHeartbeat(_Request, tag="session_heartbeat"):
    """I am still here; optionally, how far I got (replaces the last note)."""

    session_id: SessionId
    progress: Note | None = None


class SessionEnd(_Request, tag="session_end"):
    """Complete (or abandon) a session with a summary of what it did."""

    session_id: SessionId
    summary: LongText = ""
    status: EndStatus = "completed"


class SessionGet(_Request, tag="session_get"):
    session_id: SessionId


class SessionList(_Request, tag="session_list"):
    """Active sessions (stale ones marked), recent ended ones, or all."""

    workspace: Workspace | None = None  # None: every workspace
    which: Literal["active", "recent", "all"] = "active"
    limit: Limit = 50


class SessionLog(_Request, tag="session_log"):
    """Append one line to a session's log."""

    session_id: SessionId
    message: Annotated[str, Meta(min_length=1, max_length=100_000)]
    level: LogLevel = "info"
    kind: LogKind = "note"


class SessionLogs(_Request, tag="session_logs"):
    """A session's log, oldest first: the last `limit` lines, or those after `after_id`."""

    session_id: SessionId
    limit: Limit = 50
    after_id: Annotated[int, Meta(ge=0, le=SQLITE_MAX_INT)] | None = None


class SessionInfo(Struct, kw_only=True):
    id: str
    workspace: str
    harness: str
    description: str
    progress: str  # the last heartbeat's note
    status: str  # active, completed or abandoned (as stored)
    stale: bool  # active, but silent for longer than stale_after_s
    started_at: dt.datetime
    last_seen_at: dt.datetime
    ended_at: dt.datetime | None
    summary: str | None  # what it did, given when it ended
    metadata: dict[str, Any]


class SessionStartResult(Struct, kw_only=True):
    session: SessionInfo
    created: bool  # False: the id existed and was resumed


class SessionListResult(Struct, kw_only=True):
    sessions: list[SessionInfo]
    stale_after_s: float


class SessionLogEntry(Struct, kw_only=True):
    id: int
    session_id: str
    at: dt.datetime
    level: str
    kind: str
    message: str


class SessionLogsResult(Struct, kw_only=True):
    entries: list[SessionLogEntry]


# --- world state ---------------------------------------------------------------


class WorldGet(_Request, tag="world_get"):
    workspace: Workspace
    version: Version | None = None  # None: the current one; earlier ones are kept


class WorldSet(_Request, tag="world_set"):
    """Replace the workspace's world-state document.

    With `if_version`, only if the current version is that one (0: never set),
    else a `conflict` error: two sessions cannot overwrite each other unseen.
    """

    workspace: Workspace
    content: Annotated[str, Meta(max_length=200_000)]
    updated_by: Annotated[str, Meta(max_length=200)] = ""  # a session id or a name
    if_version: Version | None = None


class WorldState(Struct, kw_only=True):
    workspace: str
    content: str
    version: int  # 0: never set
    updated_at: dt.datetime | None
    updated_by: str


# --- claims ----------------------------------------------------------------------


class Claim(_Request, tag="claim"):
    """Claim a resource (a path, relative to the working tree, or any name).

    A claim on a directory covers everything below it, so it conflicts with
    claims on its descendants and ancestors. Claiming again is a no-op.
    """

    workspace: Workspace
    resource: Resource
    session_id: SessionId
    note: Note = ""


class Release(_Request, tag="release"):
    """Release a claim; `force` releases it whoever holds it."""

    workspace: Workspace
    resource: Resource
    session_id: SessionId | None = None
    force: bool = False


class Claims(_Request, tag="claims"):
    """Held claims: all of a workspace's, those overlapping `resource`, or a session's."""

    workspace: Workspace
    resource: Resource | None = None
    session_id: SessionId | None = None


class ClaimInfo(Struct, kw_only=True):
    workspace: str
    resource: str
    session_id: str
    claimed_at: dt.datetime
    note: str
    session_description: str = ""
    harness: str = ""


class ClaimResult(Struct, kw_only=True):
    granted: bool
    resource: str  # as stored (normalised)
    already: bool = False  # this session held it already
    # Refused: the live claims that overlap it (the holders).
    holders: list[ClaimInfo] = []


class ReleaseResult(Struct, kw_only=True):
    released: bool
    resource: str
    holder: ClaimInfo | None = None  # refused: who holds it


class ClaimsResult(Struct, kw_only=True):
    claims: list[ClaimInfo]


# --- sitrep ------------------------------------------------------------------------


class Sitrep(_Request, tag="sitrep"):
    """World state, active sessions, held claims and recent sessions, in a budget."""

    workspace: Workspace
    budget: Annotated[int, Meta(ge=200, le=SITREP_MAX_CHARS)] = 4000
    recent: Annotated[int, Meta(ge=0, le=100)] = 5  # ended sessions to include


class SitrepResult(Struct, kw_only=True):
    workspace: str
    world: WorldState
    active: list[SessionInfo]
    claims: list[ClaimInfo]
    recent: list[SessionInfo]
    text: str  # markdown, at most `budget` characters
    truncated: bool = False
    stale_after_s: float = 0.0


# --- brief -----------------------------------------------------------------------


class Brief(_Request, tag="brief"):
    """Compose a briefing for a workspace, optionally focused on a prompt."""

    workspace: Workspace
    prompt: Annotated[str, Meta(max_length=10_000)] = ""
    session_id: Annotated[str, Meta(max_length=200)] | None = None
    budget: Budget = 4000


class BriefResult(Struct, kw_only=True):
    text: str  # markdown, at most `budget` characters
    memory_ids: list[int]  # the memories quoted, so an agent can `get` more
    sections: list[str]  # which sections made it in, in order
    truncated: bool = False  # something was left out for the budget
