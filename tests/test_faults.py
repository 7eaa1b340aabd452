"""Faults a careful operator fears: full disk, read-only data, corrupt files, a dead embedder.

Each fault is produced for real against the real daemon: SQLite's
max_page_count ([store] max_db_mb) and a size-limited tmpfs for a full disk,
a read-only bind mount for a read-only data dir, bytes written over the index
and database files, and an HTTP embedding server that is stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import pytest
import trio
from harness import Daemon, wait_indexed
from reverie.errors import StorageError, StorageFull
from reverie.rpc.client import Client
from reverie.rpc.proto_events import Event, ListEvents, PostEvents
from reverie.rpc.protocol import Remember
from reverie.store.database import DB_FILENAME, Database

WORDS = [f"{a}{b}" for a in ("bra", "cle", "dom", "fur", "gam", "hel") for b in "aeiouy"]


# A failing test must not leave its daemon running (conftest.reap_daemons).
pytestmark = pytest.mark.usefixtures("reap_daemons")


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _digest(*paths: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _wait_log(d: Daemon, pattern: str, start: int = 0, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, d.log()[start:]):
        assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{d.log()[-3000:]}"
        time.sleep(0.05)
    return d.log()[start:]


def _fill_until_full(
    c: Client, rng: random.Random, limit: int = 2000
) -> tuple[dict[int, str], str]:
    """Remember big texts until the daemon says the storage is full."""
    stored: dict[int, str] = {}
    for i in range(limit):
        text = f"filler {i} " + _text(rng, 3000)
        try:
            stored[c.remember(text, workspace="full").id] = text
        except StorageFull:
            return stored, text
    raise AssertionError(f"never full after {limit} writes")


# -- (a) disk full ----------------------------------------------------------------


def test_size_cap_refuses_writes_serves_reads_and_recovers_on_reload(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config="[store]\nmax_db_mb = 2\n").start()
    rng = random.Random(7)
    with d.client() as c:
        keep = c.remember("the staging database lives on host orca", workspace="full").id
        stored, refused = _fill_until_full(c, rng)
        assert len(stored) > 3
        # Every writer gets the same clear error; nothing is stored half-way.
        with pytest.raises(StorageFull, match="size limit is full"):
            c.remember(refused, workspace="full")
        assert not any(r.content == refused for r in c.export(workspace="full"))
        batch = [
            Event(
                key=f"full-{i}",
                harness="claude-code",
                type="UserPromptSubmit",
                workspace="full",
                payload={"prompt": _text(rng, 3000)},
            )
            for i in range(5)
        ]
        with pytest.raises(StorageFull):
            c.call(PostEvents(events=batch))  # the events path: same error, nothing kept
        assert not c.call(ListEvents(workspace="full")).events
        # Reads go on: get, search, status, export.
        assert c.get(keep).content.startswith("the staging database")
        assert c.search("staging database orca", mode="lexical").hits[0].memory.id == keep
        assert c.status().memories["active"] == len(stored) + 1
        for mid, text in stored.items():
            assert c.get(mid).content == text
        # Room again: a SIGHUP applies the new cap, and writes succeed.
        assert d.config_path is not None
        d.config_path.write_text("[store]\nmax_db_mb = 0\n[dreams]\npreset = 'off'\n")
        mark = len(d.log())
        d.signal(signal.SIGHUP)
        _wait_log(d, r"store\.max_db_mb=0 applied", mark)
        again = c.remember(refused, workspace="full").id
        assert c.get(again).content == refused
        assert c.call(PostEvents(events=batch)).stored == len(batch)
        wait_indexed(c)  # the vector index caught up with what it could not save
    assert d.stop() == 0
    conn = apsw.Connection(str(d.data_dir / DB_FILENAME), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("PRAGMA integrity_check").get == "ok"
    conn.close()


def test_a_full_group_fails_whole_and_commits_nothing(tmp_path: Path) -> None:
    """SQLITE_FULL rolls the whole group transaction back: every job in it must
    fail with StorageFull, and none may be committed behind a failure report."""
    db = Database.open_blocking(tmp_path, max_db_mb=1)
    rng = random.Random(3)
    outcomes: list[tuple[str, int | None, BaseException | None]] = []

    async def write(text: str) -> None:
        try:
            r = await db.remember(Remember(content=text, workspace="g"))
            outcomes.append((text, r.id, None))
        except StorageError as e:
            outcomes.append((text, None, e))

    async def main() -> None:
        for _ in range(40):  # concurrent writers share groups: small and big mixed
            async with trio.open_nursery() as nursery:
                for i in range(12):
                    size = 4000 if i % 3 == 0 else 5
                    nursery.start_soon(write, f"job {len(outcomes)}-{i} " + _text(rng, size))

    trio.run(main)
    db.close_blocking()
    failed = [(t, e) for t, _, e in outcomes if e is not None]
    assert failed, "the cap was never reached"
    conn = apsw.Connection(str(tmp_path / DB_FILENAME), flags=apsw.SQLITE_OPEN_READONLY)
    present = {str(t) for (t,) in conn.execute("SELECT content FROM memories")}
    assert conn.execute("PRAGMA integrity_check").get == "ok"
    conn.close()
    leaked = [t[:30] for t, _ in failed if t in present]
    assert not leaked, f"reported failed but committed: {leaked}"
    assert all(t in present for t, mid, _ in outcomes if mid is not None)
    assert all(isinstance(e, StorageFull) for _, e in failed), {type(e) for _, e in failed}


@pytest.fixture
def tiny_fs(short_tmp: Path) -> Iterator[Path]:
    """A 3 MB tmpfs: a real filesystem that runs out of space (needs mount rights)."""
    mnt = short_tmp / "fs"
    mnt.mkdir()
    tmpfs = ("-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mnt))
    with _mounted("mount a tmpfs", tmpfs, umount=("-l", str(mnt))):
        yield mnt


@contextlib.contextmanager
def _mounted(what: str, args: tuple[str, ...], *, umount: tuple[str, ...]) -> Iterator[None]:
    """`mount *args` for the block, or skip the test where mounting is not allowed."""
    r = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot {what} here: {r.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", *umount], check=False)


def test_real_enospc_refuses_writes_serves_reads_and_recovers(
    short_tmp: Path, tiny_fs: Path
) -> None:
    d = Daemon(short_tmp, config="[index]\nenabled = false\n")
    d.data_dir = tiny_fs / "data"
    d.start()
    rng = random.Random(11)
    ballast = tiny_fs / "ballast"
    with d.client() as c:
        keep = c.remember("the release train leaves on thursdays", workspace="full").id
        # Most of the space goes to another file, as when logs fill a disk.
        free = shutil.disk_usage(tiny_fs).free
        ballast.write_bytes(b"\0" * max(0, free - 400_000))
        stored, refused = _fill_until_full(c, rng)
        with pytest.raises(StorageFull):
            c.remember(refused, workspace="full")
        assert c.get(keep).content.startswith("the release train")
        assert c.search("release train thursdays").hits[0].memory.id == keep
        for mid, text in stored.items():
            assert c.get(mid).content == text
        ballast.unlink()  # space returns: no restart needed
        again = c.remember(refused, workspace="full").id
        assert c.get(again).content == refused
    assert d.stop() == 0, d.log()[-3000:]
    conn = apsw.Connection(str(d.data_dir / DB_FILENAME), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("PRAGMA integrity_check").get == "ok"
    conn.close()


# -- (b) read-only data dir ---------------------------------------------------------


def test_read_only_data_dir_fails_start_with_a_clear_message(short_tmp: Path) -> None:
    d = Daemon(short_tmp).start()
    with d.client() as c:
        c.remember("written before the disk went read-only")
    assert d.stop() == 0
    before = _digest(*d.data_dir.rglob("*"))
    # Root ignores file modes: a read-only bind mount is what a root daemon meets.
    bind = ("--bind", "-o", "ro", str(d.data_dir), str(d.data_dir))
    with _mounted("bind-mount read-only", bind, umount=(str(d.data_dir),)):
        d.start(wait=False)
        assert d.proc is not None
        assert d.proc.wait(30) == 78, d.log()  # EX_CONFIG: a restart will not fix it
        assert "read-only file system" in d.log() and str(d.data_dir) in d.log()
        assert "Traceback" not in d.log()
    assert _digest(*d.data_dir.rglob("*")) == before
    d.start()  # writable again: starts as before
    with d.client() as c:
        assert c.status().memories["active"] == 1
    assert d.stop() == 0


# -- (c) corrupt index file ------------------------------------------------------------


def _saved_index(d: Daemon) -> tuple[Path, dict[str, Any]]:
    header = d.data_dir / "index" / "vectors.json"
    return header, json.loads(header.read_bytes())


@pytest.mark.parametrize("damage", ["header", "ids", "flip"])
def test_corrupt_index_is_detected_and_rebuilt(short_tmp: Path, damage: str) -> None:
    """The graph overwritten with zeros is tested in test_search_hybrid; here the
    header garbled, the ids file truncated, and one bit flipped deep in the graph."""
    d = Daemon(short_tmp).start()
    rng = random.Random(5)
    with d.client() as c:
        texts = {c.remember(f"note {i} " + _text(rng, 12)).id: f"note {i}" for i in range(60)}
        wait_indexed(c)
    assert d.stop() == 0
    header_path, header = _saved_index(d)
    if damage == "header":
        header_path.write_bytes(header_path.read_bytes()[:40] + b"\xff garbage")
    elif damage == "ids":
        ids = d.data_dir / "index" / header["ids"]["name"]
        ids.write_bytes(ids.read_bytes()[:-8])
    else:
        data = d.data_dir / "index" / header["data"]["name"]
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        data.write_bytes(bytes(raw))
        assert zlib.crc32(raw) != header["data"]["crc32"]
    mark = len(d.log())
    d.start()
    with d.client() as c:
        wait_indexed(c)
        assert c.status().index.vectors == len(texts)  # type: ignore[union-attr]
        for mid in list(texts)[:10]:
            got = c.get(mid).content
            assert mid in [h.memory.id for h in c.search(got, mode="vector", limit=5).hits]
    assert "vector index cannot be used, rebuilding from SQLite" in d.log()[mark:]
    assert d.stop() == 0
    _, header = _saved_index(d)  # the rebuilt index was saved, whole
    ids = np.fromfile(d.data_dir / "index" / header["ids"]["name"], dtype="<i8")
    assert sorted(ids.tolist()) == sorted(texts)


# -- (d) corrupt or foreign database --------------------------------------------------


def _foreign_db(path: Path) -> None:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5), (99.0)")
    conn.close()


def _corrupt_reverie_db(d: Daemon) -> None:
    """A real reverie database whose pages are garbled past the header."""
    d.start()
    with d.client() as c:
        for i in range(200):
            c.remember(f"memory {i} about the payment service and its retries")
    assert d.stop() == 0
    path = d.data_dir / DB_FILENAME
    raw = bytearray(path.read_bytes())
    page = int.from_bytes(raw[16:18], "big") or 65536
    for p in range(1, len(raw) // page):  # every page after the first: the schema survives
        start = p * page
        raw[start : start + 64] = random.Random(p).randbytes(64)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("kind", ["foreign", "garbage", "corrupt-reverie"])
def test_corrupt_or_foreign_database_is_refused_untouched(short_tmp: Path, kind: str) -> None:
    d = Daemon(short_tmp)
    d.data_dir.mkdir(mode=0o700)
    path = d.data_dir / DB_FILENAME
    if kind == "foreign":
        _foreign_db(path)
    elif kind == "garbage":
        path.write_bytes(os.urandom(8192))
    else:
        _corrupt_reverie_db(d)
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    before = _digest(*files)
    d.start(wait=False)
    assert d.proc is not None
    code = d.proc.wait(30)
    log = d.log()
    if kind == "corrupt-reverie" and code == 0:
        pytest.fail(f"a corrupt database was served:\n{log[-3000:]}")
    assert code == 78, log[-3000:]
    assert re.search(r"not an SQLite database|another application|corrupt|malformed", log), log
    assert "Traceback" not in log
    assert _digest(*files) == before, "the refused database was modified"
    assert not d.socket.exists()


# -- (e) the embedder fails -------------------------------------------------------------


class EmbeddingServer:
    """An OpenAI-compatible /v1/embeddings: hashed bag of words, so texts that
    share words are near. Stopping it makes the daemon's embedder fail."""

    DIM = 64

    def __init__(self, port: int = 0) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                data = [
                    {"index": i, "embedding": outer.vector(t)} for i, t in enumerate(body["input"])
                ]
                payload = json.dumps({"data": data}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def vector(self, text: str) -> list[float]:
        v = [0.0] * self.DIM
        for w in re.findall(r"\w+", text.lower()):
            v[zlib.crc32(w.encode()) % self.DIM] += 1.0
        return v if any(v) else [1.0] + [0.0] * (self.DIM - 1)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_embedder_down_degrades_search_to_lexical(short_tmp: Path) -> None:
    server = EmbeddingServer()
    # Default retries and backoff: only the first failure waits them out.
    config = f"[embedder]\nname = 'http'\nurl = '{server.url}'\nmodel = 'bag'\n"
    d = Daemon(short_tmp, config=config).start()
    query = "invoice payments retries"
    with d.client() as c:
        mid = c.remember("the invoice service retries payments three times").id
        wait_indexed(c)
        up = c.search(query)
        assert up.mode == "hybrid" and up.hits[0].memory.id == mid
        server.stop()
        mark = len(d.log())
        started = time.monotonic()
        down = c.search(query)
        first = time.monotonic() - started
        assert down.mode == "lexical" and down.hits[0].memory.id == mid
        assert any("lexical results only" in n for n in down.notes), down.notes
        # Known down: later searches do not wait for retries.
        started = time.monotonic()
        vec = c.search(query, mode="vector")  # a vector-only search degrades too
        later = time.monotonic() - started
        assert vec.mode == "lexical" and vec.hits[0].memory.id == mid
        assert first < 10 and later < 1, (first, later)
        log = _wait_log(d, "query embedding failed, searching lexically only", mark)
        assert "cannot connect" in log and "still down: not retried" in log
        # Writes go on while it is down; once it is back, search is hybrid
        # again and the index catches up with what was written meanwhile.
        late = c.remember("a deployment freeze was declared for friday").id
        server = EmbeddingServer(server.port)
        try:
            assert c.search(query).mode == "hybrid"
            wait_indexed(c, timeout=90)
            hits = c.search("deployment freeze friday", mode="vector").hits
            assert hits and hits[0].memory.id == late
        finally:
            server.stop()
    assert d.stop() == 0


def test_a_database_locked_a_moment_is_busy_not_foreign(tmp_path: Path) -> None:
    """Another process's lock while the file is checked (a plan worker recovering a
    killed daemon's WAL) is waited out, not taken for a foreign database."""
    from reverie.store.connection import check_file

    async def create() -> None:
        db = await Database.open(tmp_path)
        await db.remember(Remember(content="a memory", workspace="w"))
        await db.close()

    trio.run(create)
    path = tmp_path / DB_FILENAME
    holder = apsw.Connection(str(path))
    # In WAL mode only a recovery blocks readers; a rollback journal's exclusive
    # lock does the same, and on demand.
    holder.execute("PRAGMA journal_mode=DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    released.start()
    try:
        assert check_file(path) >= 1  # the schema's user_version, read once the lock went
    finally:
        released.join()
        holder.close()
