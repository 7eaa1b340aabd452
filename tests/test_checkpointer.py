"""WAL checkpoints off the writer's thread (store/checkpointer.py), on real SQLite."""

from __future__ import annotations

from pathlib import Path

import apsw
from harness import wait_until
from reverie.store.checkpointer import FALLBACK_FACTOR, Checkpointer
from reverie.store.connection import open_connection
from reverie.store.database import Database

PAGE = 4096


def writer_on(tmp_path: Path) -> apsw.Connection:
    conn = open_connection(tmp_path / "t.db")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x BLOB)")
    return conn


def commit_pages(conn: apsw.Connection, pages: int) -> None:
    """One commit that adds about `pages` pages to the WAL."""
    with conn:
        for _ in range(pages):
            conn.execute("INSERT INTO t VALUES (zeroblob(?))", (PAGE - 200,))


def test_commits_no_longer_checkpoint_and_the_thread_does(tmp_path: Path) -> None:
    conn = writer_on(tmp_path)
    cp = Checkpointer(tmp_path / "t.db", threshold_pages=50)
    cp.attach(conn)
    # Attached but not started: SQLite's own automatic checkpoint is off, so
    # the WAL keeps growing past the threshold (below the writer's fallback).
    commit_pages(conn, 60)
    commit_pages(conn, 60)
    commit_pages(conn, 40)
    frames = cp.wal_pages
    assert frames >= 150 and cp.checkpoints == 0
    cp.start()
    try:
        commit_pages(conn, 10)  # past the threshold: the thread is woken
        wait_until(lambda: cp.checkpoints >= 1)
        # Everything written is in the database file: the next write restarts the WAL.
        commit_pages(conn, 1)
        assert cp.wal_pages < 10
        assert conn.execute("SELECT count(*) FROM t").get == 171
    finally:
        cp.stop()
        conn.close()


def test_the_writer_checkpoints_itself_when_the_thread_is_not_there(tmp_path: Path) -> None:
    conn = writer_on(tmp_path)
    cp = Checkpointer(tmp_path / "t.db", threshold_pages=20)
    cp.attach(conn)  # never started: as if the thread died
    for _ in range(FALLBACK_FACTOR + 2):
        commit_pages(conn, 20)
        cp.after_commit(conn)
    # Bounded: the writer checkpointed at the threshold (the thread is not alive),
    # so the WAL restarted instead of growing to (FALLBACK_FACTOR + 2) * 20 pages.
    commit_pages(conn, 1)
    assert cp.wal_pages < 3 * 20
    conn.close()


def test_a_reader_holding_a_snapshot_does_not_stop_writes(tmp_path: Path) -> None:
    conn = writer_on(tmp_path)
    cp = Checkpointer(tmp_path / "t.db", threshold_pages=30)
    cp.attach(conn)
    cp.start()
    reader = open_connection(tmp_path / "t.db", readonly=True)
    try:
        reader.execute("BEGIN")
        seen = reader.execute("SELECT count(*) FROM t").get  # snapshot held
        for _ in range(5):
            commit_pages(conn, 40)  # PASSIVE checkpoints cannot pass the reader
        wait_until(lambda: cp.checkpoints >= 1)
        assert reader.execute("SELECT count(*) FROM t").get == seen
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM t").get == seen + 200
    finally:
        reader.close()
        cp.stop()
        conn.close()


def test_the_database_writer_runs_one_and_closes_it(tmp_path: Path) -> None:
    db = Database.open_blocking(tmp_path)
    try:
        cp = db.writer._checkpointer
        assert cp is not None and cp.alive
        writer_autocheckpoint = db.writer.run_sync(
            lambda c: c.execute("PRAGMA wal_autocheckpoint").get
        )
        assert writer_autocheckpoint == 0  # commits never checkpoint inline
    finally:
        db.close_blocking()
    assert not cp.alive
    # Closed cleanly: the last connection folded the WAL into the database.
    assert not (tmp_path / "reverie.db-wal").exists()
