"""The MCP bridge, driven by the `mcp` SDK's own stdio client against a real daemon."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP bridge needs the extra reverie[mcp]")

from harness import Daemon
from mcp import ClientSession
from mcp.types import CallToolResult, TextContent
from mcp_helpers import run_bridge

TOOLS = {
    "memory_search",
    "memory_remember",
    "memory_get",
    "memory_forget",
    "brief",
    "sitrep",
    "dreams_status",
    "dreams_run",
}


def _ok(result: CallToolResult) -> dict[str, Any]:
    text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
    assert not result.is_error, text
    data = result.structured_content
    assert isinstance(data, dict), result
    assert json.loads(text) == data  # text-only clients read the same JSON
    return data


def _error(result: CallToolResult) -> str:
    assert result.is_error, result
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


def test_every_tool_through_the_sdk_client(daemon: Daemon, short_tmp: Path) -> None:
    seen: dict[str, Any] = {}

    async def body(s: ClientSession) -> None:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == TOOLS
        search_schema = tools["memory_search"].input_schema
        assert search_schema["required"] == ["query"]
        assert search_schema["properties"]["limit"]["maximum"] == 100
        assert tools["dreams_run"].input_schema["properties"]["phase"]["enum"] == [
            "light-sleep",
            "rem",
            "deep-sleep",
        ]

        r = _ok(
            await s.call_tool(
                "memory_remember",
                {"content": "The staging database is on port 5433", "tags": ["db"]},
            )
        )
        assert r["created"] is True
        mid = r["id"]
        again = _ok(
            await s.call_tool(
                "memory_remember", {"content": "The staging database is on port 5433"}
            )
        )
        assert again == {"id": mid, "created": False}
        found = _ok(await s.call_tool("memory_search", {"query": "staging database port"}))
        assert [h["id"] for h in found["hits"]][:1] == [mid]
        assert found["hits"][0]["workspace"] == "mcp-ws" and found["hits"][0]["tags"] == ["db"]
        other_ws = _ok(
            await s.call_tool(
                "memory_search", {"query": "staging database", "workspace": "elsewhere"}
            )
        )
        assert other_ws["hits"] == []
        everywhere = _ok(
            await s.call_tool("memory_search", {"query": "staging", "all_workspaces": True})
        )
        assert [h["id"] for h in everywhere["hits"]] == [mid]
        got = _ok(await s.call_tool("memory_get", {"memory_id": mid}))
        assert got["content"] == "The staging database is on port 5433"
        assert got["kind"] == "fact" and got["metadata"]["source"] == "mcp"
        b = _ok(await s.call_tool("brief", {"prompt": "staging database"}))
        assert mid in b["memory_ids"] and "5433" in b["text"]
        sit = _ok(await s.call_tool("sitrep", {}))
        assert sit["workspace"] == "mcp-ws" and isinstance(sit["text"], str)
        plan = _ok(await s.call_tool("dreams_run", {"phase": "light-sleep", "dry_run": True}))
        assert plan["plan"]["phase"] == "light-sleep" and plan.get("report") is None
        run = _ok(await s.call_tool("dreams_run", {"phase": "light-sleep"}))
        assert run["report"]["status"] == "completed"
        status = _ok(await s.call_tool("dreams_status", {}))
        seen["status"] = status
        forgot = _ok(await s.call_tool("memory_forget", {"memory_id": mid, "reason": "moved"}))
        seen["forgot"] = forgot
        gone = _ok(await s.call_tool("memory_search", {"query": "staging database port"}))
        assert mid not in [h["id"] for h in gone["hits"]]

        # Bad requests are tool errors with the daemon's (or the schema's) words.
        assert "not_found" in _error(await s.call_tool("memory_get", {"memory_id": 987_654}))
        assert "limit" in _error(await s.call_tool("memory_search", {"query": "x", "limit": 0}))
        assert _error(await s.call_tool("dreams_run", {"phase": "nap"}))
        bad_kind = await s.call_tool("memory_remember", {"content": "x", "kind": "Not A Kind"})
        assert "invalid_params" in _error(bad_kind)
        # ...and the bridge keeps serving.
        assert _ok(await s.call_tool("memory_search", {"query": "anything"}))["hits"] == []

    run_bridge(daemon.socket, short_tmp, body, "--workspace", "mcp-ws")
    assert seen["forgot"]["state"] == "forgotten" and seen["forgot"]["purged"] is False
    phases = json.dumps(seen["status"])
    assert "light-sleep" in phases
    # Everything went through the daemon: its own client sees the forget.
    with daemon.client() as c:
        assert c.search("staging", workspace="mcp-ws").hits == []


def test_daemon_down_is_a_tool_error_not_a_crash(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    errors: list[str] = []

    async def body(s: ClientSession) -> None:
        assert {t.name for t in (await s.list_tools()).tools} == TOOLS
        for name, args in (
            ("memory_search", {"query": "anything"}),
            ("memory_remember", {"content": "lost?"}),
            ("dreams_status", {}),
        ):
            errors.append(_error(await s.call_tool(name, args)))
        # The daemon starts while the bridge runs: the next call reaches it.
        d.start()
        try:
            r = _ok(await s.call_tool("memory_remember", {"content": "kept after all"}))
            assert r["created"] is True
        finally:
            assert d.stop() == 0

    run_bridge(d.socket, short_tmp, body)
    assert all("not running" in e and "daemon_not_running" in e for e in errors), errors


def test_without_the_extra_the_cli_says_what_to_install(short_tmp: Path) -> None:
    import subprocess

    # A `mcp` package that cannot be imported stands for a missing extra.
    fake = short_tmp / "nomcp"
    (fake / "mcp").mkdir(parents=True)
    (fake / "mcp" / "__init__.py").write_text("raise ImportError('no', name='mcp')\n")
    out = subprocess.run(
        [sys.executable, "-m", "reverie", "mcp", "--socket", str(short_tmp / "x.sock")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(fake), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 1
    assert "pip install 'reverie[mcp]'" in out.stderr
