"""Driving the MCP bridge (`reverie mcp`) with the `mcp` SDK's own stdio client.

Imports the SDK: a test module that may run without the extra reverie[mcp]
skips (pytest.importorskip) or catches ImportError before importing this.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client


def run_bridge(
    socket_path: Path, cwd: Path, body: Callable[[ClientSession], Awaitable[None]], *extra: str
) -> None:
    """Start the bridge in `cwd` (its stderr goes to cwd/bridge.err), initialize
    a session and run `body` on it, all within 60 s."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "reverie", "mcp", "--socket", str(socket_path), *extra],
        cwd=str(cwd),
    )

    async def main() -> None:
        with (cwd / "bridge.err").open("w") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                with anyio.fail_after(60):
                    await session.initialize()
                    await body(session)

    anyio.run(main)
