"""reverie: a memory daemon for AI agents.

The public surface is small: the blocking :class:`Client` for talking to a
running daemon, and the exception hierarchy in :mod:`reverie.errors`.
Both are imported lazily (PEP 562): a hook that only needs, say,
`reverie.store.redaction` must not pay for msgspec and the protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "ReverieError", "__version__"]

if TYPE_CHECKING:
    from reverie.errors import ReverieError
    from reverie.rpc.client import Client


def __getattr__(name: str) -> Any:
    if name == "Client":
        from reverie.rpc.client import Client

        return Client
    if name == "ReverieError":
        from reverie.errors import ReverieError

        return ReverieError
    raise AttributeError(f"module 'reverie' has no attribute {name!r}")
