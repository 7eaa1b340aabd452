"""Overwriting a memory in place, and the snapshots kept of what it was.

`update` changes a memory's content, importance, pin or metadata keys and
keeps its id; the row as it was goes to `memory_versions` first
(store/versions.py). `versions` lists those snapshots, newest first.
Protocol module: msgspec and the standard library only.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from msgspec import Meta, Struct
from reverie.rpc._base import Content, Importance, MemoryId, _Request

Reason = Annotated[str, Meta(max_length=1024)]

# --- requests ----------------------------------------------------------------


class Update(_Request, tag="update"):
    """Overwrite an active memory; a field left out (None) keeps its value.

    `metadata` is merged key by key into the memory's metadata: a key whose
    value is null is removed. `pinned` sets or clears `metadata.pinned`.
    """

    memory_id: MemoryId
    content: Content | None = None
    importance: Importance | None = None
    pinned: bool | None = None
    metadata: dict[str, Any] | None = None
    reason: Reason = ""


class Versions(_Request, tag="versions"):
    memory_id: MemoryId


# --- results -----------------------------------------------------------------


class UpdateResult(Struct, kw_only=True):
    id: int
    changed: bool  # False: the update asked for what the memory already was
    version: int | None  # the snapshot taken of the old row (None when unchanged)
    content_hash: str


class MemoryVersion(Struct, kw_only=True):
    """A memory as it was before one update replaced it."""

    memory_id: int
    version: int
    content: str
    tags: list[str]
    importance: float
    pinned: bool
    metadata: dict[str, Any]
    content_hash: str
    written_at: dt.datetime  # when this version had been written
    replaced_at: dt.datetime
    reason: str


class VersionsResult(Struct, kw_only=True):
    memory_id: int
    current_version: int  # the live row counts as the version after the last snapshot
    versions: list[MemoryVersion]  # newest first
