"""`reverie backup` under concurrent writes, and `reverie restore` with the daemon stopped."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import apsw
import pytest
from harness import Daemon, wait_indexed
from reverie.errors import Conflict, CorruptIndex, InvalidParams, NotFound
from reverie.rpc.proto_backup import Backup, BackupProgress, BackupProgressResult, BackupResult
from reverie.store.backup import Progress, backup_blocking
from reverie.store.connection import open_connection
from reverie.store.database import DB_FILENAME
from reverie.store.index_file import read_header
from reverie.store.indexer import INDEX_DIR
from reverie.store.vector_index import DEFAULT_NAME


def cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reverie", *args],
        env=d.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def ids_in(path: Path) -> set[int]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").get == "ok"
        return {int(r[0]) for r in conn.execute("SELECT id FROM memories")}
    finally:
        conn.close()


class Writer(threading.Thread):
    """Posts memories one at a time until stopped; records every acknowledged id."""

    def __init__(self, d: Daemon) -> None:
        super().__init__(daemon=True)
        self.client = d.client()
        self.acked: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.client as c:
                i = 0
                while not self.stop.is_set():
                    self.acked.append(c.remember(f"concurrent write {i} " + "x" * 500).id)
                    i += 1
        except BaseException as e:
            self.error = e


def test_backup_is_consistent_under_concurrent_writes(daemon: Daemon, short_tmp: Path) -> None:
    with daemon.client() as c:
        for i in range(300):
            c.remember(f"earlier memory {i} " + "y" * 2000)
    writer = Writer(daemon)
    writer.start()
    try:
        while len(writer.acked) < 50:
            assert writer.error is None and writer.is_alive()
            threading.Event().wait(0.01)
        target = short_tmp / "snap.db"
        with daemon.client(timeout=None) as c:
            acked_before = set(writer.acked)  # acknowledged before the request is sent
            r: BackupResult = c.call(Backup(path=str(target)))
            after: BackupProgressResult = c.call(BackupProgress())
        during = len(writer.acked)
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.error is None, writer.error
    assert len(writer.acked) > during  # the writer went on after the backup
    in_backup = ids_in(target)
    assert acked_before <= in_backup
    assert in_backup <= set(writer.acked) | set(range(1, 301))  # nothing invented
    assert r.memories == len(in_backup) and r.verified
    # the index's copy, if any, is never newer than the snapshot
    assert not r.index_included or r.index_seq <= r.seq
    assert r.pages > 0 and r.bytes == target.stat().st_size
    assert not after.running
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not Path(f"{target}.tmp").exists()
    assert not Path(f"{target}-wal").exists()  # a stand-alone file


def test_snapshot_is_taken_once_while_writer_commits(short_tmp: Path) -> None:
    """Stepped page by page, the copy still finishes under a stream of commits."""
    from reverie.store import schema

    db = short_tmp / DB_FILENAME
    conn = open_connection(db)
    schema.migrate(conn)
    sql = (
        "INSERT INTO memories (uid, workspace, kind, content, created_at, observed_at, "
        "updated_at, content_hash) VALUES (?, 'w', 'fact', ?, 0, 0, 0, ?)"
    )
    with conn:
        for i in range(3000):
            conn.execute(sql, (f"u{i}", "z" * 3000 + str(i), f"h{i}"))
    stop = threading.Event()
    committed = [3000]

    def write() -> None:
        w = open_connection(db)
        while not stop.is_set():
            n = committed[0]
            with w:
                w.execute(sql, (f"u{n}", f"late {n}", f"h{n}"))
            committed[0] = n + 1
        w.close()

    t = threading.Thread(target=write)
    t.start()
    progress = Progress()
    try:
        before = committed[0]
        r = backup_blocking(db, short_tmp / "b.db", progress=progress, pages_per_step=16)
        during = committed[0] - before
    finally:
        stop.set()
        t.join()
    assert during > 0, "the writer was blocked for the whole backup"
    assert progress.done == progress.total == r.pages
    assert before <= len(ids_in(short_tmp / "b.db")) == r.memories < committed[0]
    conn.close()


def test_backup_refusals(daemon: Daemon, short_tmp: Path) -> None:
    target = short_tmp / "exists.db"
    target.write_text("keep me")
    with daemon.client() as c:
        with pytest.raises(Conflict):
            c.call(Backup(path=str(target)))
        assert target.read_text() == "keep me"
        with pytest.raises(InvalidParams):
            c.call(Backup(path=str(daemon.data_dir / DB_FILENAME), force=True))
        with pytest.raises(InvalidParams):
            c.call(Backup(path=str(short_tmp / "no" / "such" / "dir.db")))
        r = c.call(Backup(path=str(target), force=True))
        assert ids_in(target) == set() and r.memories == 0
    # the CLI: relative paths are the caller's, an existing file needs --force
    r2 = cli(daemon, "backup", str(target))
    assert r2.returncode == 2 and "--force" in r2.stderr


def saved_seq(data_dir: Path) -> int:
    try:
        return read_header(data_dir / INDEX_DIR, DEFAULT_NAME).seq
    except CorruptIndex:
        return -1


@pytest.mark.parametrize("with_index", [True, False], ids=["with-index", "no-index"])
def test_backup_write_stop_restore_start(short_tmp: Path, with_index: bool) -> None:
    d = Daemon(short_tmp, config="[index]\nsave_interval_s = 0.2\n")
    backup = short_tmp / "backup.db"
    d.start()
    try:
        with d.client() as c:
            early = [c.remember(f"early fact {i} about the staging database").id for i in range(20)]
            wait_indexed(c)
            seq = c.call(Backup(path=str(short_tmp / "probe.db"))).seq
        deadline = time.monotonic() + 30
        while saved_seq(d.data_dir) != seq:  # the indexer saves every 0.2 s when dirty
            assert time.monotonic() < deadline, "the index was never saved"
            time.sleep(0.05)
        r = cli(d, "backup", str(backup), "--json", *([] if with_index else ["--no-index"]))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["memories"] == 20 and out["index_included"] == with_index
        assert (short_tmp / "backup.db.index").is_dir() == with_index
        if with_index:
            assert out["index_seq"] == seq
        with d.client() as c:
            late = [c.remember(f"late note {i} on kubernetes").id for i in range(10)]
            wait_indexed(c)
            c.call(Backup(path=str(short_tmp / "later.db"), index=False))
        if with_index:  # another backup's index beside it: restore must not pair them
            shutil.copytree(short_tmp / "backup.db.index", short_tmp / "later.db.index")
        # the daemon holds the data dir: restore refuses and changes nothing
        refused = cli(d, "restore", str(backup), "--force")
        assert refused.returncode == 1 and "stop it first" in refused.stderr
        assert not list(d.data_dir.glob("*.before-restore-*"))
    finally:
        assert d.stop() == 0
    assert (d.data_dir / INDEX_DIR).exists()
    # an existing database is only replaced with --force
    r = cli(d, "restore", str(backup))
    assert r.returncode == 2 and "--force" in r.stderr
    r = cli(d, "restore", str(short_tmp / "later.db"), "--force", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["memories"] == 30 and not json.loads(r.stdout)["index_restored"]
    assert saved_seq(d.data_dir) == -1
    r = cli(d, "restore", str(backup), "--force", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["memories"] == 20 and not out["index_removed"]  # the first restore removed it
    assert len(list(d.data_dir.glob(f"{DB_FILENAME}.before-restore-*[0-9]"))) == 2
    assert out["index_restored"] == with_index
    aside = Path(out["previous"])
    assert aside.name.startswith(f"{DB_FILENAME}.before-restore-")
    assert set(early + late) <= ids_in(aside)  # the replaced database is kept whole
    assert saved_seq(d.data_dir) == (seq if with_index else -1)
    log_before = len(d.log())
    d.start()
    try:
        with d.client() as c:
            wait_indexed(c)
            st = c.status()
            assert st.memories["active"] == 20
            assert st.index is not None and st.index.vectors == 20
            for mid in late:
                with pytest.raises(NotFound):
                    c.get(mid)
            assert c.get(early[3]).content == "early fact 3 about the staging database"
            hits = c.search("staging database", mode="vector").hits
            assert hits and {h.memory.id for h in hits} <= set(early)
            assert not c.search("kubernetes", mode="lexical").hits
            assert {h.memory.id for h in c.search("late note kubernetes", mode="vector").hits}
            assert not set(late) & {h.memory.id for h in c.search("late note", mode="vector").hits}
        loaded = "vector index loaded" in d.log()[log_before:]
        assert loaded == with_index  # else rebuilt from SQLite
    finally:
        assert d.stop() == 0


def test_restore_refuses_what_is_not_a_reverie_backup(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    d.start()
    with d.client() as c:
        c.remember("precious")
    assert d.stop() == 0
    before = (d.data_dir / DB_FILENAME).read_bytes()
    foreign = short_tmp / "foreign.db"
    s = sqlite3.connect(foreign)
    s.execute("CREATE TABLE t (x)")
    s.commit()
    s.close()
    text = short_tmp / "notes.txt"
    text.write_text("not a database at all, just some text that is long enough" * 5)
    empty = short_tmp / "empty.db"
    empty.write_bytes(b"")
    truncated = short_tmp / "truncated.db"  # a reverie header, most pages missing
    truncated.write_bytes(before[: len(before) // 2])
    for bad in (foreign, text, empty, truncated, short_tmp / "missing.db"):
        r = cli(d, "restore", str(bad), "--force")
        assert r.returncode != 0, bad
        assert "reverie: error:" in r.stderr
    assert (d.data_dir / DB_FILENAME).read_bytes() == before
    assert not list(d.data_dir.glob("*.before-restore-*"))
    assert not list(d.data_dir.glob(".*.tmp"))
    assert os.path.exists(d.data_dir / DB_FILENAME)
