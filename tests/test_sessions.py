"""Sessions, session logs, the world state and the sitrep.

The store modules run on a real SQLite database with explicit clocks (time
is an argument, so staleness is tested at chosen moments, without sleeping);
the daemon and the CLI are exercised end to end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from harness import Daemon
from reverie.errors import Conflict, InvalidParams, NotFound
from reverie.rpc.proto_sessions import (
    Claim,
    SessionEnd,
    SessionGet,
    SessionHeartbeat,
    SessionList,
    SessionLog,
    SessionLogs,
    SessionStart,
    Sitrep,
    WorldGet,
    WorldSet,
)
from reverie.store import claims, schema, sessions, sitrep, world
from reverie.store.connection import open_connection
from reverie.store.sessions import Clock

T0 = 1_700_000_000.0
STALE = 1800.0
GH_TOKEN = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"


def at(offset: float) -> Clock:
    return Clock(now=T0 + offset, stale_after=STALE)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[apsw.Connection]:
    c = open_connection(tmp_path / "r.db")
    schema.migrate(c)
    yield c
    c.close()


def start(conn: apsw.Connection, sid: str, ws: str = "w", t: float = 0, desc: str = "") -> None:
    sessions.start(conn, SessionStart(workspace=ws, session_id=sid, description=desc), at(t))


# -- sessions -------------------------------------------------------------------------


def test_start_heartbeat_end(conn: apsw.Connection) -> None:
    info, created = sessions.start(
        conn,
        SessionStart(
            workspace="w", harness="cli", description="port the parser", metadata={"a": 1}
        ),
        at(0),
    )
    assert created and info.status == "active" and not info.stale
    assert (info.workspace, info.harness, info.description) == ("w", "cli", "port the parser")
    assert info.started_at.timestamp() == T0 and info.metadata == {"a": 1}
    # A generated id sorts by time: UTC date, time, then random hex.
    assert info.id.startswith("20231114-221320-") and len(info.id) == 24

    beat = sessions.heartbeat(conn, info.id, "half way", at(60))
    assert beat.progress == "half way" and beat.last_seen_at.timestamp() == T0 + 60
    assert sessions.heartbeat(conn, info.id, None, at(70)).progress == "half way"

    done = sessions.end(conn, info.id, "ported; tests pass", "completed", at(100))
    assert (done.status, done.summary) == ("completed", "ported; tests pass")
    assert done.ended_at is not None and done.ended_at.timestamp() == T0 + 100
    # Ending again is harmless: the first end time stays, a new summary replaces the old.
    again = sessions.end(conn, info.id, "", "completed", at(200))
    assert again.ended_at == done.ended_at and again.summary == "ported; tests pass"
    assert sessions.end(conn, info.id, "better", "completed", at(300)).summary == "better"


def test_an_ended_session_refuses_heartbeats_until_resumed(conn: apsw.Connection) -> None:
    start(conn, "s1", desc="first go")
    sessions.end(conn, "s1", "gave up", "abandoned", at(10))
    with pytest.raises(Conflict, match=r"has ended \(abandoned 50s ago\)"):
        sessions.heartbeat(conn, "s1", None, at(60))
    info, created = sessions.start(
        conn, SessionStart(workspace="elsewhere", session_id="s1", metadata={"k": 2}), at(70)
    )
    assert not created and info.status == "active" and info.ended_at is None
    # Resuming keeps the workspace, the start time and a description not replaced.
    assert (info.workspace, info.description, info.started_at.timestamp()) == ("w", "first go", T0)
    assert info.metadata == {"k": 2}
    sessions.heartbeat(conn, "s1", "back", at(80))


def test_unknown_session_is_not_found(conn: apsw.Connection) -> None:
    for call in (
        lambda: sessions.get(conn, "nope", at(0)),
        lambda: sessions.heartbeat(conn, "nope", None, at(0)),
        lambda: sessions.end(conn, "nope", "", "completed", at(0)),
        lambda: sessions.logs(conn, "nope", limit=5, after_id=None),
        lambda: sessions.log(conn, SessionLog(session_id="nope", message="x"), at(0)),
    ):
        with pytest.raises(NotFound, match="no session with id 'nope'"):
            call()


def test_staleness_is_decided_when_read(conn: apsw.Connection) -> None:
    start(conn, "quiet", t=0)
    start(conn, "busy", t=0)
    sessions.heartbeat(conn, "busy", None, at(1000))
    assert not sessions.get(conn, "quiet", at(STALE)).stale  # exactly the limit: still live
    assert sessions.get(conn, "quiet", at(STALE + 1)).stale
    active = sessions.active(conn, "w", at(STALE + 1), 10)
    assert [(s.id, s.stale) for s in active] == [("busy", False), ("quiet", True)]
    # Nothing was written: an earlier moment sees it live, and speaking revives it.
    assert not sessions.get(conn, "quiet", at(10)).stale
    sessions.log(conn, SessionLog(session_id="quiet", message="still here"), at(5000))
    assert not sessions.get(conn, "quiet", at(5000 + STALE)).stale
    # Another silence length (the [sessions] config) gives another answer.
    assert sessions.get(conn, "busy", Clock(now=T0 + 1100, stale_after=60)).stale


def test_lists_per_workspace(conn: apsw.Connection) -> None:
    start(conn, "a1", "A", t=0)
    start(conn, "a2", "A", t=10)
    start(conn, "b1", "B", t=20)
    sessions.end(conn, "a1", "did a1", "completed", at(30))
    sessions.end(conn, "b1", "did b1", "completed", at(40))
    now = at(50)
    assert [s.id for s in sessions.active(conn, "A", now, 10)] == ["a2"]
    assert [s.id for s in sessions.recent(conn, "A", now, 10)] == ["a1"]
    assert [s.id for s in sessions.recent(conn, None, now, 10)] == ["b1", "a1"]
    assert {s.id for s in sessions.every(conn, None, now, 10)} == {"a1", "a2", "b1"}
    assert len(sessions.every(conn, None, now, 2)) == 2


def test_sessions_made_by_the_event_log_are_readable(conn: apsw.Connection) -> None:
    """The event log inserts sessions with the first schema's columns only."""
    conn.execute(
        "INSERT INTO sessions (id, workspace, harness, started_at, last_seen_at) "
        "VALUES ('cc-1', 'w', 'claude-code', ?, ?)",
        (T0, T0),
    )
    info = sessions.get(conn, "cc-1", at(5))
    assert (info.description, info.progress, info.status, info.summary) == ("", "", "active", None)
    assert [s.id for s in sessions.active(conn, "w", at(5), 5)] == ["cc-1"]


def test_logs_append_and_read_back(conn: apsw.Connection) -> None:
    start(conn, "s")
    ids = [
        sessions.log(conn, SessionLog(session_id="s", message=f"line {i}"), at(i)).id
        for i in range(5)
    ]
    warn = sessions.log(
        conn, SessionLog(session_id="s", message="careful", level="warning", kind="risk"), at(9)
    )
    assert (warn.level, warn.kind) == ("warning", "risk")
    tail = sessions.logs(conn, "s", limit=3, after_id=None)
    assert [e.message for e in tail] == ["line 3", "line 4", "careful"]  # the last 3, oldest first
    page = sessions.logs(conn, "s", limit=2, after_id=ids[1])
    assert [e.message for e in page] == ["line 2", "line 3"]
    assert sessions.logs(conn, "s", limit=10, after_id=warn.id) == []
    # A line logged after the session ended is kept, without reopening it.
    sessions.end(conn, "s", "", "completed", at(20))
    sessions.log(conn, SessionLog(session_id="s", message="postscript"), at(30))
    assert sessions.get(conn, "s", at(30)).status == "completed"
    assert sessions.logs(conn, "s", limit=1, after_id=None)[0].message == "postscript"


def test_secrets_are_removed_before_storing(conn: apsw.Connection) -> None:
    sessions.start(
        conn,
        SessionStart(
            workspace="w",
            session_id="s",
            description=f"use {GH_TOKEN}",
            metadata={"env": f"GITHUB_TOKEN={GH_TOKEN}"},
        ),
        at(0),
    )
    sessions.heartbeat(conn, "s", f"pushed with {GH_TOKEN}", at(1))
    sessions.log(conn, SessionLog(session_id="s", message=f"token {GH_TOKEN}"), at(2))
    sessions.end(conn, "s", f"<private>the plan</private> done with {GH_TOKEN}", "completed", at(3))
    world.replace(conn, WorldSet(workspace="w", content=f"deploy key {GH_TOKEN}"), at(4))
    stored = json.dumps(
        [
            list(r)
            for t in ("sessions", "session_logs", "world_state")
            for r in conn.execute(f"SELECT * FROM {t}")
        ]
    )
    assert GH_TOKEN not in stored and "the plan" not in stored
    assert "[REDACTED:" in stored


# -- world state ---------------------------------------------------------------------


def test_world_state_versions_and_conflicts(conn: apsw.Connection) -> None:
    empty = world.get(conn, "w")
    assert (empty.version, empty.content, empty.updated_at) == (0, "", None)
    v1 = world.replace(conn, WorldSet(workspace="w", content="# v1", updated_by="s1"), at(0))
    assert (v1.version, v1.content, v1.updated_by) == (1, "# v1", "s1")
    assert v1.updated_at is not None and v1.updated_at.timestamp() == T0
    v2 = world.replace(conn, WorldSet(workspace="w", content="# v2", if_version=1), at(5))
    assert v2.version == 2
    # A writer that read version 1 cannot overwrite version 2 unseen.
    with pytest.raises(Conflict, match="at version 2, not 1"):
        world.replace(conn, WorldSet(workspace="w", content="# lost", if_version=1), at(6))
    assert world.get(conn, "w").content == "# v2"
    assert world.get(conn, "w", 1).content == "# v1"  # earlier versions are kept
    with pytest.raises(NotFound, match="no version 7"):
        world.get(conn, "w", 7)
    # if_version 0: create only if it was never set.
    with pytest.raises(Conflict):
        world.replace(conn, WorldSet(workspace="w", content="x", if_version=0), at(7))
    assert (
        world.replace(conn, WorldSet(workspace="z", content="z", if_version=0), at(7)).version == 1
    )
    assert world.get(conn, "w").version == 2  # one document per workspace


# -- sitrep ---------------------------------------------------------------------------


def _busy_workspace(conn: apsw.Connection) -> None:
    world.replace(conn, WorldSet(workspace="w", content="# Status\n" + "All green. " * 600), at(0))
    for i in range(12):
        start(conn, f"s{i:02}", t=i, desc=f"task number {i} " + "detail " * 20)
    for i in range(6):
        claims.claim(
            conn, Claim(workspace="w", resource=f"src/m{i}.py", session_id=f"s{i:02}"), at(100)
        )
    for i in range(6, 10):
        sessions.end(
            conn, f"s{i:02}", f"finished task {i}: " + "words " * 80, "completed", at(200 + i)
        )
    sessions.heartbeat(conn, "s00", None, at(STALE + 150))


def test_sitrep_marks_stale_sessions_and_drops_their_claims(conn: apsw.Connection) -> None:
    _busy_workspace(conn)
    rep = sitrep.gather(conn, "w", at(STALE + 160), budget=10_000, recent=3)
    assert rep.world.version == 1 and rep.stale_after_s == STALE
    assert rep.active[0].id == "s00"  # the only live one
    assert [s.stale for s in rep.active] == [False] + [True] * 7
    assert [c.resource for c in rep.claims] == ["src/m0.py"]  # the others' sessions are stale
    assert [s.id for s in rep.recent] == ["s09", "s08", "s07"]
    assert "⚠ stale `s01`" in rep.text and "⚠ stale `s00`" not in rep.text
    assert "`src/m0.py` held by `s00`" in rep.text and "src/m1.py" not in rep.text
    assert "finished task 9" in rep.text and "## Active sessions (8, 7 stale)" in rep.text


def test_sitrep_stays_within_its_budget(conn: apsw.Connection) -> None:
    _busy_workspace(conn)
    full = sitrep.gather(conn, "w", at(300), budget=100_000, recent=5)
    assert not full.truncated and 8000 < len(full.text) < 100_000
    for budget in [200, 201, 250, 333, 500, 777, 1000, 1500, 2222, 4000, 6000, 9999, 50_000]:
        rep = sitrep.gather(conn, "w", at(300), budget=budget, recent=5)
        assert len(rep.text) <= budget, budget
        assert rep.text.startswith("# Sitrep: w")
        assert rep.truncated == (len(full.text) > budget)
        if not rep.truncated:
            assert rep.text == full.text
    # A small budget still shows a bit of everything, the world state cut, not dropped.
    small = sitrep.gather(conn, "w", at(300), budget=1500, recent=5).text
    assert "## World state" in small and "[…]" in small
    assert "## Active sessions" in small and "## Claims held" in small


def test_sitrep_of_an_empty_workspace_says_so(conn: apsw.Connection) -> None:
    rep = sitrep.gather(conn, "nothing", at(0), budget=200, recent=5)
    assert rep.active == [] and rep.claims == [] and rep.world.version == 0
    assert "Nothing here yet" in rep.text and len(rep.text) <= 200


# -- the daemon and the CLI ---------------------------------------------------------------


def test_sessions_through_the_daemon(short_tmp: Path) -> None:
    with Daemon(short_tmp, config="[sessions]\nstale_after_s = 42.0\n") as d, d.client() as c:
        started = c.call(SessionStart(workspace="w", description="refactor", harness="cli"))
        sid = started.session.id
        assert started.created
        assert c.call(SessionHeartbeat(session_id=sid, progress="step 2")).progress == "step 2"
        c.call(SessionLog(session_id=sid, message="chose option B", kind="decision"))
        logs = c.call(SessionLogs(session_id=sid)).entries
        assert [(e.kind, e.message) for e in logs] == [("decision", "chose option B")]
        listed = c.call(SessionList(workspace="w"))
        assert [s.id for s in listed.sessions] == [sid] and listed.stale_after_s == 42.0
        v1 = c.call(WorldSet(workspace="w", content="# W", updated_by=sid))
        with pytest.raises(Conflict):
            c.call(WorldSet(workspace="w", content="# X", if_version=0))
        assert c.call(WorldGet(workspace="w")).version == v1.version == 1
        rep = c.call(Sitrep(workspace="w", budget=1000))
        assert "refactor — step 2" in rep.text and rep.stale_after_s == 42.0
        ended = c.call(SessionEnd(session_id=sid, summary="split the module"))
        assert ended.status == "completed"
        assert c.call(SessionList(workspace="w", which="recent")).sessions[0].summary == (
            "split the module"
        )
        with pytest.raises(Conflict):
            c.call(SessionHeartbeat(session_id=sid))
        with pytest.raises(NotFound):
            c.call(SessionGet(session_id="missing"))
        with pytest.raises(InvalidParams):
            c.call(SessionGet(session_id="has space"))
        with pytest.raises(InvalidParams):
            c.call(Sitrep(workspace="w", budget=10))


def test_cli_sessions_world_and_sitrep(daemon: Daemon, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    out = daemon.cli("session", "start", "write the docs", "--harness", "cli", cwd=project)
    assert out.returncode == 0, out.stderr
    sid = out.stdout.strip()
    env = {"REVERIE_SESSION_ID": sid}
    assert daemon.cli("session", "heartbeat", "--note", "half", env=env).returncode == 0
    assert daemon.cli("session", "log", "-", stdin="a note\n", env=env).returncode == 0
    logs = json.loads(daemon.cli("session", "--json", "logs", env=env).stdout)
    assert [e["message"] for e in logs["entries"]] == ["a note\n"]
    listed = json.loads(daemon.cli("session", "list", "--json", cwd=project).stdout)
    assert [s["id"] for s in listed["sessions"]] == [sid]
    assert listed["sessions"][0]["workspace"] == f"path:{project.resolve()}"

    doc = tmp_path / "world.md"
    doc.write_text("# Docs\nIn progress.\n")
    out = daemon.cli("world", "set", str(doc), "--if-version", "0", env=env, cwd=project)
    assert (out.returncode, out.stdout) == (0, "world state version 1\n"), out.stderr
    shown = daemon.cli("world", cwd=project)
    assert shown.stdout == "# Docs\nIn progress.\n"
    stale_write = daemon.cli("world", "set", "-", "--if-version", "0", stdin="x", cwd=project)
    assert stale_write.returncode == 5 and "at version 1, not 0" in stale_write.stderr
    world_json = json.loads(daemon.cli("world", "show", "--json", cwd=project).stdout)
    assert world_json["updated_by"] == sid and world_json["version"] == 1

    rep = daemon.cli("sitrep", cwd=project)
    assert "write the docs — half" in rep.stdout and "# Docs" in rep.stdout
    end = daemon.cli("session", "end", "--summary", "docs written", env=env)
    assert end.stdout == f"{sid} completed\n"
    assert daemon.cli("session", "heartbeat", env=env).returncode == 5
    recent = daemon.cli("session", "list", "--recent", cwd=project).stdout
    assert sid in recent and "docs written" in recent


def test_cli_errors_are_clear(daemon: Daemon, tmp_path: Path) -> None:
    missing = daemon.cli("session", "heartbeat", "--session", "nope")
    assert missing.returncode == 4 and "no session with id 'nope'" in missing.stderr
    no_session = daemon.cli("session", "end", env={"REVERIE_SESSION_ID": ""})
    assert no_session.returncode == 2 and "REVERIE_SESSION_ID" in no_session.stderr
    bad_file = daemon.cli("world", "set", str(tmp_path / "absent.md"))
    assert bad_file.returncode == 2 and "cannot read" in bad_file.stderr
    no_file = daemon.cli("world", "set")
    assert no_file.returncode == 2 and "needs a FILE" in no_file.stderr
    bad_limit = daemon.cli("session", "list", "--limit", "0")
    assert bad_limit.returncode == 2, bad_limit.stderr
    assert daemon.cli("world", "--version", "3").returncode == 4  # no such version
