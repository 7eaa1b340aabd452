"""Protocol for harness events: hooks post them, the daemon logs and digests them.

Hot path for hooks: msgspec and the standard library only.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from msgspec import Meta, Struct
from reverie.rpc._base import Workspace, _Request

Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Event(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    """One event as a harness saw it.

    ``key`` is the client's idempotency key: posting an event whose key is
    already stored (a retry, a spool drained twice) stores nothing new.

    Not tracked by the cyclic GC (``gc=False``): a batch holds thousands,
    which every collection during an ingest burst would walk, and an event
    is never part of a cycle (its payload is a tree decoded from a frame,
    nothing refers back to it).
    """

    key: Annotated[str, Meta(min_length=1, max_length=200)]
    harness: Name  # e.g. claude-code, generic
    type: Name  # the harness's own event name, e.g. UserPromptSubmit
    workspace: Workspace
    session_id: Annotated[str, Meta(max_length=200)] | None = None
    payload: dict[str, Any] = {}
    at: dt.datetime | None = None  # when it happened (default: when received)


class PostEvents(_Request, tag="post_events"):
    events: Annotated[list[Event], Meta(max_length=10_000)]


class PostEventsResult(Struct, kw_only=True):
    stored: int  # new events appended to the log
    duplicates: int  # events whose key was already stored
    observations: int  # observation memories created from the new events
    dropped: int = 0  # events refused because capture is off for their workspace


class ListEvents(_Request, tag="list_events"):
    """The event log, newest first, optionally filtered; page with ``before_id``."""

    workspace: Workspace | None = None
    session_id: Annotated[str, Meta(max_length=200)] | None = None
    type: Name | None = None
    harness: Name | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 50
    before_id: Annotated[int, Meta(ge=1)] | None = None


class StoredEvent(Struct, kw_only=True):
    id: int
    key: str
    harness: str
    type: str
    workspace: str
    session_id: str | None
    payload: dict[str, Any]  # redacted (and trimmed) as stored
    at: dt.datetime  # when it happened (as posted, else when received)
    received_at: dt.datetime | None  # when the daemon stored it


class ListEventsResult(Struct, kw_only=True):
    events: list[StoredEvent]
    next_before_id: int | None  # pass as before_id for the next (older) page


class Capture(_Request, tag="capture"):
    """Turn capture on or off for a workspace (``enabled``), or just ask.

    Without ``workspace``, list every workspace that has a setting.
    """

    workspace: Workspace | None = None
    enabled: bool | None = None


class CaptureState(Struct, kw_only=True):
    workspace: str
    enabled: bool
    updated_at: dt.datetime | None  # None: never set (capture is on by default)


class CaptureResult(Struct, kw_only=True):
    workspaces: list[CaptureState]
