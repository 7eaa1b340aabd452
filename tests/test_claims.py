"""Claims: claim, release, check; they die with their session (explicit clocks).

The store runs on a real SQLite database; the daemon and the CLI end to end.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from harness import Daemon
from reverie.errors import Conflict, InvalidParams, NotFound
from reverie.rpc.proto_sessions import Claim, Claims, Release, SessionEnd, SessionStart
from reverie.store import claims, schema, sessions
from reverie.store.claims import normalise, overlaps
from reverie.store.connection import open_connection
from reverie.store.sessions import Clock

T0 = 1_700_000_000.0
STALE = 600.0


def at(offset: float) -> Clock:
    return Clock(now=T0 + offset, stale_after=STALE)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[apsw.Connection]:
    c = open_connection(tmp_path / "r.db")
    schema.migrate(c)
    for sid in ("alice", "bob"):
        sessions.start(c, SessionStart(workspace="w", session_id=sid, description=sid), at(0))
    yield c
    c.close()


def claim(conn: apsw.Connection, sid: str, resource: str, t: float = 0, ws: str = "w") -> bool:
    return claims.claim(conn, Claim(workspace=ws, resource=resource, session_id=sid), at(t)).granted


def holders(conn: apsw.Connection, t: float = 0, **kw: str) -> list[tuple[str, str]]:
    return [(c.resource, c.session_id) for c in claims.held(conn, "w", at(t), **kw)]


def test_normalise_and_overlap() -> None:
    assert normalise(" ./src//app.py/ ") == "src/app.py"
    assert normalise("src/./x") == "src/x"
    assert normalise("/abs/dir/") == "/abs/dir"
    assert normalise("db:prod") == "db:prod"
    assert normalise("./") == "." and normalise("/") == "/"
    with pytest.raises(InvalidParams):
        normalise("   ")
    assert overlaps("src", "src/app.py") and overlaps("src/app.py", "src")
    assert not overlaps("src", "src2/app.py") and not overlaps("src/a", "src/ab")
    assert overlaps(".", "src/app.py") and not overlaps(".", "/abs")
    assert overlaps("/", "/abs") and not overlaps("/", "rel")
    assert not overlaps("db:prod", "db:staging")


def test_claim_is_exclusive_and_idempotent(conn: apsw.Connection) -> None:
    first = claims.claim(
        conn, Claim(workspace="w", resource="src/app.py", session_id="alice", note="fixing"), at(0)
    )
    assert first.granted and not first.already and first.resource == "src/app.py"
    again = claims.claim(
        conn, Claim(workspace="w", resource="./src/app.py", session_id="alice"), at(5)
    )
    assert again.granted and again.already
    refused = claims.claim(
        conn, Claim(workspace="w", resource="src/app.py", session_id="bob"), at(6)
    )
    assert not refused.granted
    assert [(h.session_id, h.note, h.session_description) for h in refused.holders] == [
        ("alice", "fixing", "alice")
    ]
    [held] = claims.held(conn, "w", at(7))
    assert held.claimed_at.timestamp() == T0  # re-claiming kept the first claim's time
    # Other workspaces are other resources.
    assert claim(conn, "bob", "src/app.py", ws="elsewhere")


def test_directories_cover_what_is_below(conn: apsw.Connection) -> None:
    assert claim(conn, "alice", "src/parser")
    assert not claim(conn, "bob", "src/parser/lexer.py")  # inside alice's directory
    assert not claim(conn, "bob", "src")  # would cover alice's directory
    assert not claim(conn, "bob", ".")  # the whole working tree
    assert claim(conn, "bob", "src/parser2")
    assert claim(conn, "alice", "src/parser/lexer.py")  # one's own claims never conflict
    assert holders(conn, resource="src/parser/lexer.py") == [
        ("src/parser", "alice"),
        ("src/parser/lexer.py", "alice"),
    ]
    assert holders(conn, resource="src") == [
        ("src/parser", "alice"),
        ("src/parser/lexer.py", "alice"),
        ("src/parser2", "bob"),
    ]
    assert holders(conn, session_id="bob") == [("src/parser2", "bob")]
    assert holders(conn, resource="docs") == []


def test_release(conn: apsw.Connection) -> None:
    claim(conn, "alice", "a.py")
    not_mine = claims.release(
        conn, Release(workspace="w", resource="a.py", session_id="bob"), at(1)
    )
    assert not not_mine.released and not_mine.holder is not None
    assert not_mine.holder.session_id == "alice"
    mine = claims.release(conn, Release(workspace="w", resource="a.py", session_id="alice"), at(2))
    assert mine.released and holders(conn) == []
    twice = claims.release(conn, Release(workspace="w", resource="a.py", session_id="alice"), at(3))
    assert not twice.released and twice.holder is None
    claim(conn, "alice", "b.py")
    forced = claims.release(conn, Release(workspace="w", resource="b.py", force=True), at(4))
    assert forced.released and holders(conn) == []
    with pytest.raises(InvalidParams, match="needs the session"):
        claims.release(conn, Release(workspace="w", resource="b.py"), at(5))
    with pytest.raises(NotFound):
        claims.release(conn, Release(workspace="w", resource="b.py", session_id="carol"), at(5))


def test_claims_die_with_their_session(conn: apsw.Connection) -> None:
    claim(conn, "alice", "a.py")
    claim(conn, "bob", "b.py")
    sessions.end(conn, "bob", "done", "completed", at(10))
    assert holders(conn, t=10) == [("a.py", "alice")]
    assert conn.execute("SELECT count(*) FROM resource_locks WHERE session_id = 'bob'").get == 0
    # Alice goes silent: at the stale limit she still holds it, past it she does not.
    assert holders(conn, t=STALE) == [("a.py", "alice")]
    assert holders(conn, t=STALE + 1) == []
    with pytest.raises(NotFound):
        claims.claim(conn, Claim(workspace="w", resource="x", session_id="nobody"), at(0))


def test_a_stale_session_gets_its_claims_back_unless_taken(conn: apsw.Connection) -> None:
    sessions.start(conn, SessionStart(workspace="w", session_id="carol"), at(0))
    claim(conn, "alice", "src/a.py")
    claim(conn, "alice", "docs")
    # Both go silent; carol takes over a directory overlapping alice's lapsed claim.
    assert claim(conn, "carol", "src", t=STALE + 10)
    assert conn.execute("SELECT count(*) FROM resource_locks WHERE resource = 'src/a.py'").get == 0
    # Alice speaks again: she keeps what nobody took, and lost the rest.
    sessions.heartbeat(conn, "alice", None, at(STALE + 20))
    assert holders(conn, t=STALE + 30) == [("docs", "alice"), ("src", "carol")]
    assert not claim(conn, "alice", "src/a.py", t=STALE + 40)
    # An ended session cannot claim.
    sessions.end(conn, "alice", "", "abandoned", at(STALE + 50))
    with pytest.raises(Conflict, match="has ended"):
        claim(conn, "alice", "new.py", t=STALE + 60)


def _cli(d: Daemon, *args: str, cwd: Path, sid: str = "") -> subprocess.CompletedProcess[str]:
    return d.cli(*args, cwd=cwd, env={"REVERIE_SESSION_ID": sid})


def test_claims_through_the_daemon(daemon: Daemon) -> None:
    with daemon.client() as c:
        a = c.call(SessionStart(workspace="w", description="alice")).session.id
        b = c.call(SessionStart(workspace="w", description="bob")).session.id
        assert c.call(Claim(workspace="w", resource="lib", session_id=a)).granted
        refused = c.call(Claim(workspace="w", resource="lib/x.py", session_id=b))
        assert not refused.granted and refused.holders[0].session_id == a
        assert [x.resource for x in c.call(Claims(workspace="w", resource="lib/x.py")).claims] == [
            "lib"
        ]
        c.call(SessionEnd(session_id=a, summary="done"))
        assert c.call(Claims(workspace="w")).claims == []
        assert c.call(Claim(workspace="w", resource="lib/x.py", session_id=b)).granted
        assert c.call(Release(workspace="w", resource="lib/x.py", session_id=b)).released
        with pytest.raises(InvalidParams):
            c.call(Claim(workspace="w", resource="", session_id=b))


def test_cli_claims_use_paths_relative_to_the_working_tree(daemon: Daemon, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    sub = root / "src"
    sub.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    start = _cli(daemon, "session", "start", "alice", cwd=root)
    alice = start.stdout.strip()
    bob = _cli(daemon, "session", "start", "bob", cwd=root).stdout.strip()
    # From the subdirectory, `app.py` is the repository's src/app.py.
    out = _cli(daemon, "claim", "app.py", "--note", "refactoring", cwd=sub, sid=alice)
    assert (out.returncode, out.stdout) == (0, "claimed src/app.py\n"), out.stderr
    again = _cli(daemon, "claim", "src/app.py", cwd=root, sid=alice)
    assert again.stdout == "claimed src/app.py (already yours)\n"
    held = _cli(daemon, "claim", "src", cwd=root, sid=bob)
    assert held.returncode == 5 and f"held by {alice} (alice)" in held.stderr
    assert "refactoring" in held.stderr
    who = json.loads(_cli(daemon, "claims", "app.py", "--json", cwd=sub).stdout)
    assert [(c["resource"], c["session_id"]) for c in who["claims"]] == [("src/app.py", alice)]
    listed = _cli(daemon, "claims", cwd=root).stdout
    assert listed.startswith(f"src/app.py  held by {alice}")
    not_yours = _cli(daemon, "release", "src/app.py", cwd=root, sid=bob)
    assert not_yours.returncode == 5 and "--force" in not_yours.stderr
    assert _cli(daemon, "release", "src/app.py", cwd=root, sid=alice).returncode == 0
    assert _cli(daemon, "claims", cwd=root).stdout == "no claims held\n"
    literal = _cli(daemon, "claim", "db:prod", "--literal", cwd=sub, sid=bob)
    assert literal.stdout == "claimed db:prod\n"
    unknown = _cli(daemon, "claim", "x", cwd=root, sid="ghost")
    assert unknown.returncode == 4
