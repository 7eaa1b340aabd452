"""Protocol for sessions, the world state, claims, the sitrep and the briefing.

Hot path for hooks: msgspec and the standard library only.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct
from reverie.rpc._base import Workspace, _Request

# Claude Code's additionalContext is capped at 10,000 characters.
BRIEF_MAX_CHARS = 10_000


class Brief(_Request, tag="brief"):
    """Compose a briefing for a workspace, optionally focused on a prompt."""

    workspace: Workspace
    prompt: Annotated[str, Meta(max_length=10_000)] = ""
    session_id: Annotated[str, Meta(max_length=200)] | None = None
    budget: Annotated[int, Meta(ge=200, le=BRIEF_MAX_CHARS)] = 4000


class BriefResult(Struct, kw_only=True):
    text: str  # markdown, at most `budget` characters
    memory_ids: list[int]  # the memories quoted, so an agent can `get` more
    sections: list[str]  # which sections made it in, in order
    truncated: bool = False  # something was left out for the budget
