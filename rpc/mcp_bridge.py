"""`reverie mcp`: the Model Context Protocol over stdio, forwarded to the daemon.

An MCP client (Claude Code, an IDE, any agent harness) starts this process
and calls its tools; each call opens a connection to the daemon through
reverie's own client, sends one request and returns the result as
structured content (and as JSON text for clients that read only text).
Nothing is kept between calls, so the bridge survives daemon restarts: a
call while the daemon is down, or one the daemon rejects, is a tool error
(`isError`) with the daemon's message, never a crash of the bridge.

Tools run synchronously in the SDK's worker threads (the client is a
blocking socket client), one connection per call.

This module imports the `mcp` SDK (the optional extra `reverie[mcp]`); the
CLI imports it only when `reverie mcp` runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from reverie import __version__
from reverie.errors import ReverieError
from reverie.rpc._base import _Request
from reverie.rpc.client import Client
from reverie.rpc.proto_dreams import DreamsRun, DreamsStatus
from reverie.rpc.proto_sessions import Brief, Sitrep
from reverie.rpc.protocol import Forget, Get, Remember, Search, SearchResult

log = logging.getLogger("reverie.rpc.mcp_bridge")
CALL_TIMEOUT_S = 30.0
DREAM_TIMEOUT_S = 3600.0  # a phase over a large store runs for minutes

INSTRUCTIONS = (
    "reverie is a long-term memory shared across coding sessions. Search it before "
    "answering questions about past work (memory_search), remember durable facts, "
    "decisions and preferences (memory_remember), and read `brief` at the start of a "
    "task. Memories are scoped to a workspace: by default the project this server was "
    "started in."
)

MemoryIdArg = Annotated[int, Field(ge=1, description="the memory's id (from memory_search)")]
WorkspaceArg = Annotated[
    str | None,
    Field(description="workspace id; default: the project this server was started in"),
]


class Bridge:
    """Forwards one request per tool call to the daemon."""

    def __init__(self, socket_path: str | os.PathLike[str] | None, workspace: str) -> None:
        self.socket_path = socket_path
        self.workspace = workspace

    def ws(self, workspace: str | None) -> str:
        return workspace or self.workspace

    def call(self, request: _Request, *, timeout: float = CALL_TIMEOUT_S) -> Any:
        """The daemon's result, or a ToolError the model can read."""
        try:
            with Client(self.socket_path, timeout=timeout, name=f"reverie-mcp/{__version__}") as c:
                return c.call(request)
        except ReverieError as e:
            raise ToolError(f"reverie: {e.message} [{e.code}]") from None
        except OSError as e:  # a socket error the client did not map
            raise ToolError(f"reverie: cannot reach the daemon: {e}") from None


def _plain(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(result)
    return out


def _hits(found: SearchResult) -> dict[str, Any]:
    """Search hits without provenance and metadata: what a model needs to read."""
    hits = [
        {
            "id": h.memory.id,
            "score": round(h.score, 4),
            "kind": h.memory.kind,
            "workspace": h.memory.workspace,
            "tier": h.memory.tier,
            "tags": h.memory.tags,
            "observed_at": h.memory.observed_at.isoformat(),
            "content": h.memory.content,
        }
        for h in found.hits
    ]
    return {"mode": found.mode, "notes": found.notes, "hits": hits}


def build_server(bridge: Bridge) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        "reverie", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )

    @server.tool(description="Search memories (full text and vectors), best first.")
    def memory_search(
        query: Annotated[str, Field(min_length=1, max_length=10_000, description="what to find")],
        workspace: WorkspaceArg = None,
        all_workspaces: Annotated[
            bool, Field(description="search every workspace, not only one")
        ] = False,
        limit: Annotated[int, Field(ge=1, le=100, description="at most this many hits")] = 10,
        mode: Annotated[
            Literal["hybrid", "lexical", "vector"] | None,
            Field(description="default: the daemon's configured mode"),
        ] = None,
        kinds: Annotated[list[str], Field(description="only these kinds (fact, decision, ...)")]
        | None = None,
        tags: Annotated[list[str], Field(description="memories must carry every tag")]
        | None = None,
    ) -> dict[str, Any]:
        req = Search(
            query=query,
            workspace=None if all_workspaces else bridge.ws(workspace),
            limit=limit,
            mode=mode,
            kinds=kinds or [],
            tags=tags or [],
        )
        found: SearchResult = bridge.call(req)
        return _hits(found)

    @server.tool(description="Remember something durable; returns its id (deduplicated).")
    def memory_remember(
        content: Annotated[str, Field(min_length=1, description="the memory's text")],
        kind: Annotated[
            str, Field(description="observation, fact, preference, decision, procedure, ...")
        ] = "fact",
        tags: Annotated[list[str] | None, Field(description="tags to file it under")] = None,
        importance: Annotated[float, Field(ge=0, le=1, description="0 to 1")] = 0.5,
        workspace: WorkspaceArg = None,
    ) -> dict[str, Any]:
        req = Remember(
            content=content,
            kind=kind,
            tags=tags or [],
            importance=importance,
            workspace=bridge.ws(workspace),
            metadata={"source": "mcp"},
        )
        return _plain(bridge.call(req))

    @server.tool(description="Read one memory in full, with its provenance and metadata.")
    def memory_get(memory_id: MemoryIdArg) -> dict[str, Any]:
        return _plain(bridge.call(Get(memory_id=memory_id)))

    @server.tool(description="Forget a memory: hidden from search, kept as a tombstone.")
    def memory_forget(
        memory_id: MemoryIdArg,
        reason: Annotated[str, Field(max_length=1000, description="why, kept with it")] = "",
    ) -> dict[str, Any]:
        return _plain(bridge.call(Forget(memory_id=memory_id, reason=reason)))

    @server.tool(
        description="A briefing for a workspace: world state, relevant long-term memories, "
        "recent sessions and claims, optionally focused on a prompt."
    )
    def brief(
        prompt: Annotated[str, Field(max_length=10_000, description="what the task is about")] = "",
        workspace: WorkspaceArg = None,
        budget: Annotated[int, Field(ge=200, le=10_000, description="max chars")] = 4000,
    ) -> dict[str, Any]:
        req = Brief(workspace=bridge.ws(workspace), prompt=prompt, budget=budget)
        return _plain(bridge.call(req))

    @server.tool(
        description="A situation report: world state, active sessions, held claims and "
        "recent sessions of a workspace."
    )
    def sitrep(
        workspace: WorkspaceArg = None,
        budget: Annotated[int, Field(ge=200, le=20_000, description="max chars")] = 4000,
    ) -> dict[str, Any]:
        return _plain(bridge.call(Sitrep(workspace=bridge.ws(workspace), budget=budget)))

    @server.tool(description="The dream phases: schedules, last runs, locks and recent totals.")
    def dreams_status(
        window_hours: Annotated[float, Field(gt=0, le=8784, description="totals over")] = 24.0,
    ) -> dict[str, Any]:
        return _plain(bridge.call(DreamsStatus(window_hours=window_hours)))

    @server.tool(
        description="Run a dream phase now (light-sleep, rem or deep-sleep) and wait for it; "
        "dry_run returns the plan and writes nothing."
    )
    def dreams_run(
        phase: Annotated[
            Literal["light-sleep", "rem", "deep-sleep"], Field(description="which phase")
        ],
        dry_run: Annotated[bool, Field(description="plan only, write nothing")] = False,
    ) -> dict[str, Any]:
        req = DreamsRun(phase=phase, dry_run=dry_run)
        return _plain(bridge.call(req, timeout=DREAM_TIMEOUT_S))

    return server


def serve(socket_path: str | None, workspace: str | None) -> None:
    """Serve MCP on stdin/stdout until the client closes them."""
    from reverie.rpc.workspace import workspace_for

    ws = workspace or workspace_for(Path.cwd()).id
    build_server(Bridge(socket_path, ws)).run("stdio")
