"""A real SQLite store populated for the dream-phase tests (helpers, not tests)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import apsw
from reverie.rpc.protocol import Remember
from reverie.store import memories, recalls, schema, search
from reverie.store.connection import open_connection

DB = "dream-test.db"
HOUR = 3600.0
DAY = 86400.0


def open_db(tmp: Path) -> apsw.Connection:
    conn = open_connection(tmp / DB)
    schema.migrate(conn)
    return conn


def reader(tmp: Path) -> apsw.Connection:
    return open_connection(tmp / DB, readonly=True)


def found(tmp: Path, query: str) -> list[int]:
    """Ids of the top 10 search hits for `query` across workspaces, on a fresh reader."""
    conn = reader(tmp)
    try:
        return [h.memory.id for h in search.search(conn, query, workspace=None, limit=10)]
    finally:
        conn.close()


def _at(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def remember(
    conn: apsw.Connection, content: str, at: float, *, entered: float | None = None, **kw: Any
) -> int:
    """A memory observed at `at` that entered the store at `entered` (default: `at` too;
    an imported old history passes the import time)."""
    with conn:
        mid, created = memories.remember(conn, Remember(content=content, observed_at=_at(at), **kw))
        conn.execute(
            "UPDATE memories SET created_at = ? WHERE id = ?",
            (at if entered is None else entered, mid),
        )
    assert created
    return mid


def observe(
    conn: apsw.Connection, session: str, event: str, text: str, at: float, *tags: str
) -> int:
    """An observation as the events feature stores it (metadata session_id, event, harness)."""
    mid = remember(
        conn,
        text,
        at,
        kind="observation",
        tags=[f"event:{event}", *tags],
        importance=0.3,
        metadata={"harness": "claude-code", "event": event, "session_id": session},
    )
    with conn:  # the events feature records the event an observation came from
        conn.execute(
            "UPDATE memories SET provenance = ? WHERE id = ?", (f'{{"events":[{mid + 1000}]}}', mid)
        )
    return mid


def populate(conn: apsw.Connection, now: float) -> dict[str, Any]:
    """Two finished sessions, one still running, and standing memories of every age."""
    ids: dict[str, Any] = {}
    t = now - 3 * HOUR
    ids["s1"] = [
        observe(conn, "s1", "UserPromptSubmit", "User: why does the deploy fail on arm64?", t),
        observe(conn, "s1", "PostToolUse", "Bash: make deploy → exit 2", t + 60, "tool:Bash"),
        observe(
            conn,
            "s1",
            "PostToolUseFailure",
            "Bash failed: docker buildx → no matching manifest for arm64",
            t + 120,
            "tool:Bash",
            "error",
        ),
        observe(conn, "s1", "PostToolUse", "Edit: Dockerfile", t + 180, "tool:Edit"),
        observe(
            conn,
            "s1",
            "Stop",
            "Assistant: the base image had no arm64 variant; switched to debian-slim",
            t + 240,
        ),
    ]
    t2 = now - 2 * HOUR
    ids["s2"] = [
        observe(conn, "s2", "UserPromptSubmit", "User: add a retry to the uploader", t2),
        observe(conn, "s2", "PostToolUse", "Edit: uploader.py", t2 + 30, "tool:Edit"),
        observe(conn, "s2", "SessionEnd", "Session ended: exit", t2 + 40),
    ]
    # Still active (last seen a minute ago): not summarized yet.
    ids["s3"] = [
        observe(conn, "s3", "UserPromptSubmit", "User: rename the config loader", now - 300),
        observe(conn, "s3", "PostToolUse", "Read: loader.py", now - 60, "tool:Read"),
    ]
    ids["fresh_fact"] = remember(
        conn, "The staging cluster runs on arm64 nodes", now - DAY, kind="fact", importance=0.7
    )
    ids["old_note"] = remember(
        conn, "Lunch order for the offsite was pizza", now - 90 * DAY, kind="fact", importance=0.1
    )
    ids["old_decision"] = remember(
        conn, "We chose Postgres over MySQL", now - 200 * DAY, kind="decision", importance=0.1
    )
    ids["popular"] = remember(
        conn, "Deploys go through tools/deploy.sh", now - 2 * DAY, kind="procedure", importance=0.8
    )
    with conn:
        for q in ("how to deploy", "deploy script", "release steps", "ship it"):
            recalls.record(conn, recalls.query_hash(q), [(ids["popular"], 1.0)])
    return ids


def dump(conn: apsw.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (FTS shadow tables included), in rowid order."""
    names = [
        str(n)
        for (n,) in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name"
        )
    ]
    return {n: conn.execute(f'SELECT * FROM "{n}"').fetchall() for n in names}


MEMORY_STATE = (
    "id, uid, workspace, kind, content, tags, importance, tier, state, superseded_by, "
    "provenance, created_at, observed_at, last_recalled_at, recall_count, distinct_queries, "
    "content_hash, metadata"
)


def memory_state(conn: apsw.Connection) -> dict[int, tuple[Any, ...]]:
    """Each memory's columns that matter (everything but seq and updated_at)."""
    return {r[0]: r for r in conn.execute(f"SELECT {MEMORY_STATE} FROM memories")}


def seqs(conn: apsw.Connection) -> dict[int, tuple[int, float]]:
    return {
        int(i): (int(s), float(u))
        for i, s, u in conn.execute("SELECT id, seq, updated_at FROM memories")
    }
