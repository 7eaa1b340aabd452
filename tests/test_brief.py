"""The briefing: world state, memories, claims and sessions within a budget.

Composed on a real SQLite database with explicit clocks (lexical search, no
vector index), and end to end through the daemon and the CLI.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from harness import Daemon
from reverie.daemon.config import SearchConfig
from reverie.errors import InvalidParams
from reverie.rpc.proto_sessions import (
    BRIEF_MAX_CHARS,
    Brief,
    BriefResult,
    Claim,
    SessionStart,
    WorldSet,
)
from reverie.rpc.protocol import Remember
from reverie.store import brief, budget, claims, memories, schema, sessions, world
from reverie.store.connection import open_connection
from reverie.store.database import DB_FILENAME
from reverie.store.sessions import Clock

T0 = 1_700_000_000.0
NOW = Clock(now=T0 + 100, stale_after=1800)
CFG = SearchConfig(mode="lexical")


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[apsw.Connection]:
    c = open_connection(tmp_path / "r.db")
    schema.migrate(c)
    yield c
    c.close()


def remember(conn: apsw.Connection, text: str, ws: str = "w", **kw: object) -> int:
    mid, _ = memories.remember(conn, Remember(content=text, workspace=ws, **kw))  # type: ignore[arg-type]
    return mid


def compose(conn: apsw.Connection, **kw: object) -> BriefResult:
    req = Brief(workspace=str(kw.pop("workspace", "w")), **kw)  # type: ignore[arg-type]
    return brief.compose(conn, req, NOW, cfg=CFG, indexer=None).result


def quoted_ids(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"\[#(\d+)\]", text)]


def test_an_empty_workspace_gets_a_short_helpful_text(conn: apsw.Connection) -> None:
    res = compose(conn, budget=200)
    assert res.sections == [] and res.memory_ids == [] and not res.truncated
    assert res.text.startswith("# Briefing: w") and "Nothing is known" in res.text
    assert len(res.text) <= 200
    assert "`reverie world set" in compose(conn).text


def test_sections_most_valuable_first(conn: apsw.Connection) -> None:
    world.replace(conn, WorldSet(workspace="w", content="# Plan\nShip v2.", updated_by="me"), NOW)
    fact = remember(conn, "The API server listens on port 8080", kind="fact", tier="long")
    for sid, desc in (("me", "writing the brief"), ("other", "fixing the CI")):
        sessions.start(conn, SessionStart(workspace="w", session_id=sid, description=desc), NOW)
    sessions.start(conn, SessionStart(workspace="w", session_id="old"), Clock(T0, 1800))
    sessions.end(conn, "old", "migrated the database to v5", "completed", Clock(T0 + 50, 1800))
    claims.claim(conn, Claim(workspace="w", resource="ci.yml", session_id="other"), NOW)
    claims.claim(conn, Claim(workspace="w", resource="brief.py", session_id="me"), NOW)
    res = compose(conn, session_id="me")
    assert res.sections == ["world", "memories", "claims", "recent", "active"]
    heads = [line for line in res.text.splitlines() if line.startswith("## ")]
    assert [h.split(" (")[0] for h in heads] == [
        "## World state",
        "## Key memories",
        "## Claims held",
        "## Recently ended sessions",
        "## Other active sessions",
    ]
    assert res.memory_ids == [fact] and f"- [#{fact}] fact: The API server" in res.text
    assert "Ship v2." in res.text and "migrated the database to v5" in res.text
    assert "`brief.py` held by `me`" in res.text and res.text.count("(yours)") == 1
    others = res.text.split("## Other active sessions")[1]
    assert "fixing the CI" in others and "writing the brief" not in others  # not itself
    assert not res.truncated


def test_without_a_prompt_long_term_memories_come_first(conn: apsw.Connection) -> None:
    low = remember(conn, "long-term but minor", tier="long", importance=0.2)
    high = remember(conn, "long-term and key", tier="long", importance=0.9)
    obs = remember(conn, "a raw observation", importance=0.9)
    fact = remember(conn, "a short-term fact", kind="fact", importance=0.3)
    remember(conn, "another workspace's key memory", ws="other", tier="long", importance=1.0)
    assert compose(conn).memory_ids == [high, low, fact, obs]


def test_short_term_memories_fill_in_until_some_are_promoted(
    conn: apsw.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [remember(conn, f"observation number {i}") for i in range(3)]
    res = compose(conn)
    assert sorted(res.memory_ids) == sorted(ids) and "## Key memories" in res.text
    # Newer memories of other workspaces hide these from the scan of the newest
    # rows: they are found through the workspace's index instead, in the same order.
    for i in range(5):
        remember(conn, f"elsewhere {i}", ws="other")
    monkeypatch.setattr(brief, "RECENT_SCAN", 4)
    assert compose(conn).memory_ids == res.memory_ids
    assert [m.id for m in brief.standing(conn, "other", limit=2)] == [ids[-1] + 5, ids[-1] + 4]


def test_a_prompt_focuses_the_memories(conn: apsw.Connection) -> None:
    remember(conn, "We deploy with tools/deploy.sh on Fridays", kind="procedure")
    db = remember(conn, "The database is PostgreSQL 16 with pgvector", kind="fact")
    remember(conn, "The database of the other project is MySQL", ws="other", kind="fact")
    remember(conn, "Lunch is at noon", tier="long", importance=1.0)
    res = compose(conn, prompt="which database do we use?")
    assert res.memory_ids[0] == db and "## Relevant memories" in res.text
    assert "MySQL" not in res.text and "Lunch" not in res.text
    composed = brief.compose(
        conn, Brief(workspace="w", prompt="database"), NOW, cfg=CFG, indexer=None
    )
    assert [mid for mid, _ in composed.recalls] == composed.result.memory_ids
    # A prompt nothing matches falls back to the standing memories.
    off = compose(conn, prompt="zebra xylophone")
    assert "## Key memories" in off.text and off.memory_ids
    assert (
        brief.compose(
            conn, Brief(workspace="w", prompt="zebra"), NOW, cfg=CFG, indexer=None
        ).recalls
        == []
    )


def _crowded(conn: apsw.Connection, rng: random.Random) -> None:
    words = "parser lexer token deploy database cache index query budget world claim".split()

    def text(n: int) -> str:
        return " ".join(rng.choice(words) + rng.choice(["", "s", "ed", "\n"]) for _ in range(n))

    world.replace(conn, WorldSet(workspace="w", content=text(3000)), NOW)
    for i in range(60):
        remember(
            conn,
            f"memory {i}: " + text(rng.randint(3, 120)),
            tier=rng.choice(["short", "long"]),
            importance=rng.random(),
        )
    for i in range(15):
        sid = f"s{i}"
        sessions.start(conn, SessionStart(workspace="w", session_id=sid, description=text(30)), NOW)
        claims.claim(conn, Claim(workspace="w", resource=f"src/f{i}.py", session_id=sid), NOW)
        if i % 2:
            sessions.end(conn, sid, text(rng.randint(1, 200)), "completed", NOW)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_above_the_budget(conn: apsw.Connection, seed: int) -> None:
    rng = random.Random(seed)
    _crowded(conn, rng)
    budgets = {200, 201, 202, 4000, BRIEF_MAX_CHARS} | {
        rng.randint(200, BRIEF_MAX_CHARS) for _ in range(60)
    }
    seen_sections: set[str] = set()
    for b in sorted(budgets):
        prompt = rng.choice(["", "parser database", "deploy the cache index"])
        res = compose(conn, budget=b, prompt=prompt)
        assert len(res.text) <= b, (b, len(res.text))
        # Every id listed is quoted in the text, once, and nothing else is.
        assert quoted_ids(res.text) == res.memory_ids, b
        assert len(set(res.memory_ids)) == len(res.memory_ids)
        for name in res.sections:
            assert name in ("world", "memories", "claims", "recent", "active")
        assert res.truncated  # the world state alone is larger than any budget
        seen_sections.update(res.sections)
        if b >= 2000:
            # With room to spare, every kind of section makes it in, the world state cut.
            assert res.sections == ["world", "memories", "claims", "recent", "active"], b
            assert "[…]" in res.text
    assert seen_sections == {"world", "memories", "claims", "recent", "active"}


def test_a_larger_budget_quotes_more_memories(conn: apsw.Connection) -> None:
    # Not strictly monotonic: a long memory skipped at one budget lets two
    # short ones in, and takes their place at a larger one.
    _crowded(conn, random.Random(7))
    small, large = (len(compose(conn, budget=b).memory_ids) for b in (400, BRIEF_MAX_CHARS))
    assert 1 <= small < large


def test_fit_spends_leftovers_and_cuts_documents() -> None:
    doc = budget.Item("line\n" * 400, cuttable=True)
    small = [budget.Item(f"- item {i}") for i in range(5)]
    sections = [
        budget.Section("doc", "## Doc", [doc], 0.3),
        budget.Section("list", "## List", small, 0.3),
    ]
    fitted = budget.fit(sections, 1000, head="# H")
    assert fitted.sections == ["doc", "list"] and fitted.truncated
    assert (
        len(fitted.text) <= 1000 and len(fitted.text) > 950
    )  # the list's unused share went to the doc
    assert all(f"- item {i}" in fitted.text for i in range(5))
    assert fitted.text.split("## List")[0].rstrip().endswith(budget.CUT_MARK.strip())
    whole = budget.fit(sections, 10_000, head="# H", tail="more?")
    assert not whole.truncated and "more?" not in whole.text and "[…]" not in whole.text


# -- the daemon and the CLI ---------------------------------------------------------------


def test_brief_through_the_daemon(short_tmp: Path) -> None:
    with Daemon(short_tmp) as d, d.client() as c:
        empty = c.call(Brief(workspace="nothing"))
        assert empty.sections == [] and "Nothing is known" in empty.text
        mid = c.remember("The release checklist is in RELEASING.md", workspace="w", kind="fact").id
        c.call(WorldSet(workspace="w", content="# W\nrelease next week"))
        res = c.call(Brief(workspace="w", prompt="where is the release checklist?", budget=500))
        assert res.memory_ids == [mid] and f"[#{mid}]" in res.text and len(res.text) <= 500
        for bad in (199, BRIEF_MAX_CHARS + 1):
            with pytest.raises(InvalidParams):
                c.call(Brief(workspace="w", budget=bad))
    # The memories a brief quotes for a prompt are recorded as recalled (the
    # daemon buffers recalls and writes them at the latest when it stops).
    assert d.proc is not None and d.proc.returncode == 0
    conn = open_connection(d.data_dir / DB_FILENAME, readonly=True)
    try:
        assert conn.execute("SELECT recall_count FROM memories WHERE id = ?", (mid,)).get == 1
    finally:
        conn.close()


def test_cli_brief(daemon: Daemon, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reverie", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=daemon.environ(),
            cwd=tmp_path,
        )

    ws = f"path:{tmp_path.resolve()}"
    with daemon.client() as c:
        mid = c.remember("Tests run with pytest -x -q", workspace=ws, kind="procedure").id
    out = cli("brief", "--prompt", "how do I run the tests", "--budget", "300", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["memory_ids"] == [mid] and len(res["text"]) <= 300
    human = cli("brief")
    assert human.stdout.startswith(f"# Briefing: {ws}") and f"[#{mid}]" in human.stdout
    too_big = cli("brief", "--budget", "20000")
    assert too_big.returncode == 2 and "between 200 and 10000" in too_big.stderr
    other = cli("brief", "--workspace", "elsewhere")
    assert "Nothing is known" in other.stdout
