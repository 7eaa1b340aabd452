"""reverie: a memory daemon for AI agents.

The public surface is small: the blocking :class:`Client` for talking to a
running daemon, and the exception hierarchy in :mod:`reverie.errors`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from reverie.errors import ReverieError
from reverie.rpc.client import Client

__all__ = ["Client", "ReverieError", "__version__"]
