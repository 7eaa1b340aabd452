"""The vector index is saved every save_interval_s even when writes outpace it.

The indexer catches up in batches; a stream of writes faster than it absorbs
them keeps every batch full, and a save that waited for the catch-up to end
would never come: after a crash the restart would catch up with everything
since the daemon started. These tests drive the real daemon with such a
stream (small index batches, bulk posts of events) and watch the saved
index's header, the commit point of a save.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio
import trio.testing
from harness import Daemon, wait_indexed
from reverie.daemon.config import IndexConfig
from reverie.errors import ConnectionLost, CorruptIndex
from reverie.rpc.client import Client
from reverie.rpc.proto_events import Event, PostEvents
from reverie.rpc.protocol import Remember
from reverie.store import memories
from reverie.store.database import Database
from reverie.store.embed_lexical import LexicalEmbedder
from reverie.store.index_file import read_header
from reverie.store.indexer import BURST_FACTOR, INDEX_DIR, Indexer, _Generation
from reverie.store.vector_index import DEFAULT_NAME, VectorIndex

INTERVAL_S = 0.5
# A save is due INTERVAL_S after the last one; it comes after the batch in
# progress, and the save itself takes a moment (much more on a loaded CI box).
SLACK_S = 1.5
STREAM_S = 5.0
CONFIG = f"""
[index]
save_interval_s = {INTERVAL_S}
busy_file_save_s = 0  # the files at every save, also while clients are served
batch = 16
delay_s = 0.05
max_lag_s = 0.25
"""
WS = "git:example.com/team/saves"
PER_POST = 100
POSTERS = 1
# 5,000-7,000 memories a second here: several times what the index absorbs in
# batches of 16, and a backlog the restart clears in a few seconds.
PAUSE_S = 0.005


def _events(poster: int, n: int) -> list[Event]:
    return [
        Event(
            key=f"p{poster}-{n}-{i}",
            type="UserPromptSubmit",
            payload={"prompt": f"stream {poster} post {n} item {i} about topic{(n * i) % 97}"},
            harness="claude-code",
            workspace=WS,
            session_id=f"s-{poster}",
        )
        for i in range(PER_POST)
    ]


class _Watch:
    """Background threads: posters that write, a watcher of the index header and status."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.stop = threading.Event()
        self.saves: list[tuple[float, int]] = []  # (header saved_at, seq), distinct
        self.indexed: list[tuple[float, int]] = []  # (time, status indexed_seq)
        self.posted = 0
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._post, args=(p,)) for p in range(POSTERS)]
        self.threads.append(threading.Thread(target=self._watch))

    def __enter__(self) -> _Watch:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _post(self, poster: int) -> None:
        n = 0
        try:
            with self.d.client() as c:
                while not self.stop.is_set():
                    c.call(PostEvents(events=_events(poster, n)))
                    self.posted += PER_POST
                    n += 1
                    time.sleep(PAUSE_S)
        except (OSError, ConnectionLost):
            pass  # the daemon was killed under us
        except BaseException as e:  # reported by the test
            if not self.stop.is_set():
                self.errors.append(e)

    def _watch(self) -> None:
        header = self.d.data_dir / "index" / "vectors.json"
        try:
            with self.d.client(timeout=5) as c:
                while not self.stop.is_set():
                    h = _header(header)
                    if h is not None and (not self.saves or self.saves[-1][0] != h["saved_at"]):
                        self.saves.append((h["saved_at"], h["seq"]))
                    ix = c.status().index
                    if ix is not None:
                        self.indexed.append((time.time(), ix.indexed_seq))
                    time.sleep(0.02)
        except (OSError, ConnectionLost):
            pass


def _header(path: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(path.read_bytes())
        return loaded
    except (FileNotFoundError, ValueError):
        return None


def _pending(c: Client) -> int:
    ix = c.status().index
    assert ix is not None
    return ix.pending


def test_saves_keep_their_interval_under_a_stream_and_a_crash_restarts_from_one(
    short_tmp: Path,
) -> None:
    d = Daemon(short_tmp, config=CONFIG).start()
    try:
        with d.client() as c:
            wait_indexed(c)  # the empty index is built and saved
        with _Watch(d) as w:
            began = time.time()
            time.sleep(STREAM_S)
            with d.client() as c:
                behind = _pending(c)
            killed = time.time()
            d.kill()
        assert not w.errors, w.errors
        # The stream outpaced the index (else the catch-up ends and saves anyway).
        assert behind > 500, (behind, w.posted)
        during = [(at, seq) for at, seq in w.saves if at >= began]
        times = [began, *(at for at, _ in during), killed]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # The first save also waits for the burst's first catch-up (at most
        # BURST_FACTOR * max_lag_s = 1.25 s after the stream starts).
        assert gaps[0] <= 1.25 + INTERVAL_S + SLACK_S, (gaps, w.saves)
        assert max(gaps[1:]) <= INTERVAL_S + SLACK_S, (gaps, w.saves)
        print(f"saves: {len(during)} in {killed - began:.1f} s, gaps {[round(g, 2) for g in gaps]}")
        seqs = [seq for _, seq in during]
        assert seqs == sorted(seqs) and seqs[-1] > seqs[0], during

        # After the crash: the header left is a recent save, and the restart
        # loads it and catches up from its seq, not from the start.
        header = _header(d.data_dir / "index" / "vectors.json")
        assert header is not None
        saved_seq = header["seq"]
        recent = [seq for t, seq in w.indexed if t <= killed - INTERVAL_S - SLACK_S]
        assert recent and saved_seq >= recent[-1], (saved_seq, recent[-3:])
        mark = len(d.log())
        assert d.config_path is not None  # catch up in large batches from here
        d.config_path.write_text(CONFIG.replace("batch = 16", "batch = 1024"))
        d.start()
        loaded = re.search(r"vector index loaded model=\S+ vectors=\d+ seq=(\d+)", d.log()[mark:])
        deadline = time.monotonic() + 30
        while loaded is None and time.monotonic() < deadline:
            time.sleep(0.05)
            loaded = re.search(
                r"vector index loaded model=\S+ vectors=\d+ seq=(\d+)", d.log()[mark:]
            )
        assert loaded is not None, d.log()[mark:]
        assert int(loaded.group(1)) == saved_seq
        print(
            f"posted {w.posted}, index behind by {behind} at the kill, restart from seq {saved_seq}"
        )
        with d.client() as c:
            wait_indexed(c, timeout=120)
            status = c.status()
            assert status.index is not None
            assert status.index.vectors == status.memories["active"]
        assert d.stop() == 0
    finally:
        d.kill()


def test_a_save_due_during_a_deferred_catch_up_is_made_on_time(short_tmp: Path) -> None:
    """A burst defers the catch-up up to BURST_FACTOR * max_lag_s; not the save."""
    # Jumps only when nothing ran for 0.2 s of real time, so that the clock
    # stands still while the save's worker thread runs.
    clock = trio.testing.MockClock(autojump_threshold=0.2)
    db = Database.open_blocking(short_tmp)
    try:
        cfg = IndexConfig(delay_s=0.25, max_lag_s=2.0, save_interval_s=3.0)
        embedder = LexicalEmbedder()
        ix = Indexer(db, embedder, short_tmp, cfg)
        gen = _Generation(embedder, VectorIndex(embedder.dim, model_id=embedder.model_id), 7)
        gen.index.add([1], np.ones((1, embedder.dim), np.float32))
        gen.dirty, gen.save_due = True, 3.0
        ix._serving = gen

        async def main() -> float:
            assert ix._idle_wait() == 3.0  # idle: wake when the save is due
            ix.notify(1000)
            async with trio.open_nursery() as nursery:

                async def writes() -> None:  # 2,000 memories a second, endless
                    for i in range(1, 60):
                        await trio.sleep_until(i / 2)
                        ix.notify(1000)

                nursery.start_soon(writes)
                await ix._quiet_period()
                ended = trio.current_time()
                nursery.cancel_scope.cancel()
            return ended

        ended = trio.run(main, clock=clock)
    finally:
        db.close_blocking()
    assert ended == BURST_FACTOR * cfg.max_lag_s  # the deferral is unchanged
    assert not gen.dirty
    assert read_header(short_tmp / INDEX_DIR, DEFAULT_NAME).seq == 7
    assert 6.0 <= gen.save_due < ended  # begun at 3.0, when it was due; next one 3 s on


def test_while_clients_are_served_a_save_stores_vectors_and_leaves_the_files(
    short_tmp: Path,
) -> None:
    """busy_file_save_s: under load the files wait (their write stalls the daemon),
    the vectors do not (memory stays bounded); once it is quiet, or the files are
    due, they are written."""
    clock = trio.testing.MockClock(autojump_threshold=0.2)
    db = Database.open_blocking(short_tmp)
    busy = [True]
    try:
        cfg = IndexConfig(save_interval_s=3.0, busy_file_save_s=10.0)
        embedder = LexicalEmbedder()
        ix = Indexer(db, embedder, short_tmp, cfg)
        ix.busy = lambda: busy[0]
        gen = _Generation(embedder, VectorIndex(embedder.dim, model_id=embedder.model_id), 7)
        ix._serving = gen
        directory = short_tmp / INDEX_DIR

        made = [
            db.writer.run_sync(
                lambda c, i=i: memories.remember(c, Remember(content=f"saved note {i}"))[0]
            )
            for i in range(5)
        ]
        hashes = dict(
            db.writer.run_sync(
                lambda c: c.execute("SELECT id, content_hash FROM memories").fetchall()
            )
        )

        def change(seq: int, mid: int) -> None:
            vec = embedder.embed([f"saved note {mid}"])
            gen.index.add([mid], vec)
            gen.unsaved[mid] = (hashes[mid], vec[0])
            gen.seq, gen.dirty = seq, True

        def stored() -> int:
            return int(
                db.writer.run_sync(lambda c: c.execute("SELECT count(*) FROM embeddings").get)
            )

        async def main() -> list[tuple[float, int, int | None]]:
            seen = []
            gen.save_due, gen.files_due = 3.0, 10.0
            for step, mid in enumerate(made, start=1):
                change(6 + step, mid)
                await trio.sleep_until(3.0 * step)
                await ix._maybe_save()
                try:
                    files: int | None = read_header(directory, DEFAULT_NAME).seq
                except CorruptIndex:
                    files = None
                seen.append((trio.current_time(), stored(), files))
                if step == 4:
                    busy[0] = False
            return seen

        seen = trio.run(main, clock=clock)
    finally:
        db.close_blocking()
    assert [(n, files) for _, n, files in seen] == [
        (1, None),  # 3 s: busy, the files are not due: vectors only
        (2, None),  # 6 s
        (3, None),  # 9 s
        (4, 10),  # 12 s: the files are due (10 s) although still busy
        (5, 11),  # 15 s: quiet: written at once (the next due would be 22 s)
    ]
    assert gen.files_due == 15.0 + 10.0 and not gen.dirty and not gen.unsaved
