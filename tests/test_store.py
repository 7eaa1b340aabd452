"""The store: file checks, migrations, and the group-committing writer (real SQLite)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apsw
import pytest
import trio
from harness import Daemon
from reverie.errors import NotFound, NotReverieDatabase, SchemaTooNew
from reverie.rpc.protocol import Remember
from reverie.store import memories, schema
from reverie.store.connection import APPLICATION_ID
from reverie.store.database import DB_FILENAME, Database


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_database_gets_schema_and_application_id(tmp_path: Path) -> None:
    db = Database.open_blocking(tmp_path)
    db.close_blocking()
    conn = apsw.Connection(str(tmp_path / DB_FILENAME))
    assert conn.pragma("application_id") == APPLICATION_ID
    assert conn.pragma("user_version") == schema.LATEST
    assert conn.pragma("journal_mode") == "wal"


def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    Database.open_blocking(tmp_path).close_blocking()
    path = tmp_path / DB_FILENAME
    conn = apsw.Connection(str(path))
    conn.pragma("user_version", schema.LATEST + 1)
    conn.pragma("wal_checkpoint(TRUNCATE)")
    conn.close()
    before = _digest(path)
    with pytest.raises(SchemaTooNew, match="upgrade reverie"):
        Database.open_blocking(tmp_path)
    assert _digest(path) == before


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    before = _digest(path)
    with pytest.raises(NotReverieDatabase, match="another application"):
        Database.open_blocking(tmp_path)
    assert _digest(path) == before
    assert not Path(f"{path}-wal").exists()


def test_non_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    path.write_bytes(b"this is not a database\n" * 100)
    before = _digest(path)
    with pytest.raises(NotReverieDatabase, match="not an SQLite database"):
        Database.open_blocking(tmp_path)
    assert _digest(path) == before


def test_daemon_refuses_foreign_database_with_clear_message(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    d.data_dir.mkdir()
    (d.data_dir / DB_FILENAME).write_bytes(b"garbage" * 50)
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) == 78
    assert "not an SQLite database" in d.log()


def test_group_commit_shares_transactions(tmp_path: Path) -> None:
    db = Database.open_blocking(tmp_path)
    ids: list[int] = []

    async def write(n: int) -> None:
        r = await db.remember(Remember(content=f"memory number {n}"))
        ids.append(r.id)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for n in range(400):
                nursery.start_soon(write, n)

    trio.run(main)
    w = db.writer
    assert w.jobs == 400 and len(set(ids)) == 400
    assert w.commits < w.jobs / 4, f"{w.commits} commits for {w.jobs} writes: no grouping"
    db.close_blocking()


def test_a_failing_job_does_not_undo_its_group(tmp_path: Path) -> None:
    db = Database.open_blocking(tmp_path)
    results: dict[str, object] = {}

    def boom(conn: apsw.Connection) -> None:
        conn.execute(
            "INSERT INTO sessions (id, workspace, started_at, last_seen_at) VALUES ('s', 'w', 0, 0)"
        )
        memories.get(conn, 999)  # raises NotFound after writing

    async def run(name: str, fn: object) -> None:
        try:
            results[name] = await db.writer.run(fn)  # type: ignore[arg-type]
        except NotFound as e:
            results[name] = e

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(run, "a", lambda c: memories.remember(c, Remember(content="kept a")))
            n.start_soon(run, "boom", boom)
            n.start_soon(run, "b", lambda c: memories.remember(c, Remember(content="kept b")))

    trio.run(main)
    assert isinstance(results["boom"], NotFound)
    conn = apsw.Connection(str(tmp_path / DB_FILENAME))
    assert conn.execute("SELECT count(*) FROM memories").get == 2
    assert conn.execute("SELECT count(*) FROM sessions").get == 0  # rolled back to its savepoint
    db.close_blocking()


def test_migration_from_v1_keeps_data_and_orders_changes(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    conn = apsw.Connection(str(path))
    with conn:
        conn.execute(schema.MIGRATIONS[0])
        conn.pragma("application_id", APPLICATION_ID)
        conn.pragma("user_version", 1)
        conn.execute(
            "INSERT INTO memories (uid, workspace, kind, content, created_at, observed_at, "
            "updated_at, content_hash) VALUES ('u1', 'w', 'fact', 'old fact', 0, 0, 0, 'h')"
        )
    conn.close()
    db = Database.open_blocking(tmp_path)
    r = db.writer.run_sync(lambda c: memories.remember(c, Remember(content="new fact")))
    db.writer.run_sync(lambda c: memories.forget(c, 1, purge=False, reason=""))
    db.close_blocking()
    conn = apsw.Connection(str(path))
    assert conn.pragma("user_version") == schema.LATEST
    seqs = dict(conn.execute("SELECT id, seq FROM memories").fetchall())
    # The forget happened last, so the old memory now has the highest sequence.
    assert seqs[r[0]] < seqs[1]
    assert conn.execute("SELECT content FROM memories WHERE id = 1").get == "old fact"


def test_updating_an_active_memory_keeps_the_full_text_index_sound(tmp_path: Path) -> None:
    from reverie.store import search

    db = Database.open_blocking(tmp_path)
    mid, _ = db.writer.run_sync(
        lambda c: memories.remember(c, Remember(content="placeholder text for an old memory"))
    )
    db.writer.run_sync(
        lambda c: c.execute("UPDATE memories SET content = 'new words here' WHERE id = ?", (mid,))
    )
    db.close_blocking()
    conn = apsw.Connection(str(tmp_path / DB_FILENAME))
    conn.execute("INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)")
    assert search.lexical_scores(conn, "new words", workspace=None, limit=5).keys() == {mid}
    assert search.lexical_scores(conn, "placeholder", workspace=None, limit=5) == {}
