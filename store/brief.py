"""The briefing: what a session should know before it starts (or answers a prompt).

Composed for one workspace from, most valuable first: the world state, the
memories that matter (with a prompt, the hybrid search's best matches for
it; without, the most important and most recently recalled long-term
memories, then short-term ones while little has been promoted yet), the
claims other sessions hold, recently ended sessions' summaries, and the other
active sessions. All of it within a character budget (store/budget.py), each
memory tagged with its id so that an agent can `reverie get ID` for more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apsw
from reverie.daemon.config import SearchConfig
from reverie.rpc.proto_sessions import Brief, BriefResult, ClaimInfo
from reverie.rpc.protocol import Explain, Memory, Search
from reverie.store import claims, hybrid, memories, sessions, world
from reverie.store.budget import Item, Section, fit
from reverie.store.indexer import Indexer
from reverie.store.sessions import Clock
from reverie.store.sitrep import active_line, claim_line, ended_line, flat, world_section

MEMORY_LIMIT = 25
MEMORY_CHARS = 300  # of one memory's text, per line
QUERY_CHARS = 2000  # of the prompt, as the search query
RECENT_WINDOW = 500  # short-term memories considered without a prompt, newest first
RECENT_SCAN = 20_000  # the store's newest rows looked through for them first
LONG_TIER_BOOST = 1.25  # with a prompt, a long-term memory outranks a short one this much
RECENT_SESSIONS = 5
OTHER_SESSIONS = 10
# Each section's share of the budget in the first pass (store/budget.py); the
# rest (5%, and what a section does not use) goes to what did not fit.
SHARES = {"world": 0.3, "memories": 0.38, "claims": 0.1, "recent": 0.1, "active": 0.07}


@dataclass(slots=True)
class Composed:
    result: BriefResult
    # With a prompt, the memories quoted and their scores, to record as recalls.
    recalls: list[tuple[int, float]]


def relevant(
    conn: apsw.Connection, workspace: str, prompt: str, cfg: SearchConfig, indexer: Indexer | None
) -> list[tuple[Memory, float]]:
    """The workspace's best matches for the prompt, long-term ones favoured.

    Only memories that match (by words, by vector, or as the neighbour of a
    match): the search also returns candidates that merely came along.
    """
    req = Search(
        query=prompt[:QUERY_CHARS],
        workspace=workspace,
        limit=MEMORY_LIMIT,
        importance_boost=0.5,
        explain=True,
    )
    scored = [
        (h.memory, h.score * (LONG_TIER_BOOST if h.memory.tier == "long" else 1.0))
        for h in hybrid.run(conn, req, cfg=cfg, indexer=indexer).hits
        if h.explain is not None and _matched(h.explain)
    ]
    scored.sort(key=lambda ms: ms[1], reverse=True)
    return scored


def _matched(ex: Explain) -> bool:
    return ex.lexical_rank is not None or ex.vector_rank is not None or ex.neighbour > 0


def standing(conn: apsw.Connection, workspace: str, limit: int = MEMORY_LIMIT) -> list[Memory]:
    """Without a prompt: the most important long-term memories, then recent short-term ones.

    Long-term ones rank by importance, then by when they were last recalled
    (or observed); the partial index memories_long keeps this to the
    workspace's long-term memories. Until enough have been promoted,
    short-term ones fill in: of the workspace's recent ones, facts, decisions
    and the like before raw observations, then by importance.
    """
    rows = list(
        conn.execute(
            f"SELECT {memories.COLUMNS} FROM memories "
            "WHERE workspace = ? AND tier = 'long' AND state = 'active' "
            "ORDER BY importance DESC, coalesce(last_recalled_at, observed_at) DESC LIMIT ?",
            (workspace, limit),
        )
    )
    if len(rows) < limit:
        ranked = sorted(
            _recent_short(conn, workspace, limit),
            key=lambda r: (r[3] == "observation", -r[6], -r[0]),  # kind, importance, id
        )
        rows += ranked[: limit - len(rows)]
    return [memories.row_to_memory(r) for r in rows]


def _recent_short(conn: apsw.Connection, workspace: str, want: int) -> list[tuple[Any, ...]]:
    """Up to RECENT_WINDOW of the workspace's newest active short-term memories.

    No index orders a workspace's memories by age, and sorting a large
    workspace costs ~100 ms at 100k. So first the store's newest RECENT_SCAN
    rows are scanned (a busy workspace is among them); only if they hold too
    few, the workspace's ids come from its index (a workspace that is rare
    among the newest rows is small, or idle).
    """
    where = "workspace = ? AND tier = 'short' AND state = 'active'"
    rows = conn.execute(
        f"SELECT {memories.COLUMNS} FROM memories NOT INDEXED "
        f"WHERE id > (SELECT max(id) FROM memories) - ? AND {where} ORDER BY id DESC LIMIT ?",
        (RECENT_SCAN, workspace, RECENT_WINDOW),
    ).fetchall()
    if len(rows) >= want:
        return [tuple(r) for r in rows]
    return [
        tuple(r)
        for r in conn.execute(
            f"SELECT {memories.COLUMNS} FROM memories WHERE id IN ("
            "  SELECT id FROM memories WHERE workspace = ? ORDER BY id DESC LIMIT ?"
            f") AND {where}",
            (workspace, RECENT_WINDOW, workspace),
        )
    ]


def memory_line(m: Memory) -> str:
    return f"- [#{m.id}] {m.kind}: {flat(m.content, MEMORY_CHARS)}"


def compose(
    conn: apsw.Connection, req: Brief, clock: Clock, *, cfg: SearchConfig, indexer: Indexer | None
) -> Composed:
    ws = req.workspace
    recalls: list[tuple[int, float]] = []
    found: list[Memory] = []
    if req.prompt.strip():
        scored = relevant(conn, ws, req.prompt, cfg, indexer)
        found = [m for m, _ in scored]
        recalls = [(m.id, s) for m, s in scored]
    focused = bool(found)
    if not found:
        found = standing(conn, ws)
    others = [
        s for s in sessions.active(conn, ws, clock, OTHER_SESSIONS + 1) if s.id != req.session_id
    ][:OTHER_SESSIONS]
    held = claims.held(conn, ws, clock)
    mem_title = "## Relevant memories" if focused else "## Key memories"
    recent = sessions.recent(conn, ws, clock, RECENT_SESSIONS)
    sections = [
        world_section(world.get(conn, ws), clock, SHARES["world"]),
        Section(
            "memories",
            mem_title + " (`reverie get ID` for the whole text)",
            [Item(memory_line(m), memory_id=m.id) for m in found],
            SHARES["memories"],
        ),
        Section(
            "claims",
            "## Claims held",
            [Item(_claim(c, req.session_id, clock)) for c in held],
            SHARES["claims"],
        ),
        Section(
            "recent",
            "## Recently ended sessions",
            [Item(ended_line(s, clock)) for s in recent],
            SHARES["recent"],
        ),
        Section(
            "active",
            "## Other active sessions",
            [Item(active_line(s, clock)) for s in others],
            SHARES["active"],
        ),
    ]
    head = f"# Briefing: {flat(ws, 200)}"
    fitted = fit(
        sections, req.budget, head=head, tail="_(trimmed to fit: `reverie search` for more)_"
    )
    text = fitted.text
    if not fitted.sections:
        text = (
            text + "\n\nNothing is known about this workspace yet: no world state, memories or "
            "sessions. Memories accrue as sessions run; describe the project with "
            "`reverie world set FILE`."
        )[: req.budget]
    quoted = set(fitted.memory_ids)
    return Composed(
        result=BriefResult(
            text=text,
            memory_ids=fitted.memory_ids,
            sections=fitted.sections,
            truncated=fitted.truncated,
        ),
        recalls=[(mid, s) for mid, s in recalls if mid in quoted],
    )


def _claim(c: ClaimInfo, session_id: str | None, clock: Clock) -> str:
    line = claim_line(c, clock)
    return line + " (yours)" if c.session_id == session_id else line
