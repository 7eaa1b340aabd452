"""`reverie mcp`: serve the Model Context Protocol on stdio (rpc/mcp_bridge.py).

The `mcp` SDK is an optional extra: it is imported only when this command
runs, so the rest of the CLI (and the hooks) never pay for it.
"""

from __future__ import annotations

import argparse

from reverie.rpc._cli_base import EXIT_ERROR, common, fail

INSTALL_HINT = "the MCP bridge needs the optional extra: pip install 'reverie[mcp]'"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mcp",
        help="serve the Model Context Protocol on stdio, forwarding to the daemon",
        description=(
            "Run as an MCP server over stdin/stdout (for Claude Code: "
            "`claude mcp add reverie -- reverie mcp`). Tools: memory_search, "
            "memory_remember, memory_get, memory_forget, brief, sitrep, dreams_status, "
            "dreams_run. The daemon may start or stop at any time: a call while it is "
            "down is a tool error. Needs the extra reverie[mcp]."
        ),
    )
    common(p)  # --json is accepted for uniformity; MCP speaks JSON-RPC either way
    p.add_argument(
        "--workspace",
        help="default workspace of the tools (default: the current directory's workspace)",
    )
    p.set_defaults(run=cmd_mcp, needs_client=False)


def cmd_mcp(args: argparse.Namespace) -> int:
    try:
        from reverie.rpc.mcp_bridge import serve
    except ImportError as e:
        if (e.name or "").split(".")[0] in {"mcp", "pydantic", "mcp_types"}:
            fail(f"{INSTALL_HINT} ({e})", EXIT_ERROR)
        raise
    serve(args.socket, args.workspace)
    return 0
