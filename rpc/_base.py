"""What every protocol module shares: field constraints and the request base.

The protocol is split by feature (protocol.py for memories and search,
proto_*.py for the others); rpc/protocol.py assembles them into the one
tagged union the daemon decodes. Hot path for hooks: msgspec and the
standard library only.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

PROTOCOL_VERSION = 1

# Field constraints shared by several messages.
Kind = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="memory kind")]
Tag = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[^\s,]+$")]
Workspace = Annotated[str, Meta(min_length=1, max_length=512)]
Content = Annotated[str, Meta(min_length=1, max_length=1_000_000)]
Importance = Annotated[float, Meta(ge=0.0, le=1.0)]
SQLITE_MAX_INT = 2**63 - 1
MemoryId = Annotated[int, Meta(ge=1, le=SQLITE_MAX_INT)]
Limit = Annotated[int, Meta(ge=1, le=1000)]
Tier = Literal["short", "long", "archived"]
State = Literal["active", "superseded", "forgotten"]

DEFAULT_WORKSPACE = "default"


class _Request(Struct, tag_field="method", forbid_unknown_fields=True, kw_only=True):
    """Base of all requests: every request carries the id its response echoes."""

    id: int = 0
