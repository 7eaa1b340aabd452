"""Keeps the HNSW index in step with SQLite, off the event loop.

SQLite is the source of truth; the index is derived. Every change to a
memory takes a new `seq`, so the indexer only has to follow `seq` upwards:
it reads changed memories in batches, reuses the vectors SQLite already
holds for their current content, embeds the rest in a worker thread, stores
those vectors, and adds or removes labels in the index.

Start-up: the saved index is loaded and catches up from the `seq` in its
header. If it is missing, corrupt, or from another model, it is rebuilt from
SQLite in the background with progress in `status` and sd_notify STATUS;
until it is ready, searches are lexical only. A model change (in the config)
builds the new index beside the old one, and searches keep using the old
index and its embedder until the new one is complete: the index is never
mixed.

Writes are acknowledged before their vectors exist; full-text search finds a
memory at once and vector search a little later (the lag is `pending` in
status). The index yields to writes: it catches up once they pause for
`delay_s`, and while they keep coming, at the latest `max_lag_s` after the
first pending one; during a burst (memories written at BURST_RATE a second
or more, as bulk posts of events make them) at the latest BURST_FACTOR times
that (10 s by default), so that embedding and graph insertion do not take the
cores the burst's commits need. The work is deferred, not saved: the index
catches up in the pause that follows (tests/bench/bench_ingest.py reports how
long that takes). While clients are being served, each step of a catch-up is
paced and starts in a gap between requests, if one comes within 10 ms
(store/index_pacing.py).

Saves: every save_interval_s while the index has unsaved changes, so that a
restart after a crash redoes at most that much of the index's work (plus
what the index was behind the writes when it died). Not only between
catch-ups: writes that outpace the index keep every batch full and the
catch-up would never end, so a save that falls due is made after the batch
in progress, and one that falls due while a burst defers the catch-up is made
then. A save writes the vectors computed since the last one to SQLite, then
the index and the workspace indexes with the `seq` they reflect; it runs in
the indexer's task, so nothing changes the index meanwhile, and searches go
on (it shares the index's lock with them; see vector_index.py). hnswlib (0.8)
holds the GIL while it writes its file (about 0.5 s at 100k vectors, during
which every thread of the daemon would wait), so large indexes are written
by a forked child (index_file.start_write, ``[index] fork_save``).
While clients are being served, a save stores the vectors and leaves the
files for later, at most ``[index] busy_file_save_s`` after they were last
written (or loaded): writing them still stalled a 64-client load for
55-100 ms, and a crash then redoes graph insertions from the stored vectors,
no embedding. tests/test_index_save.py checks the cadence under such a
stream and a crash.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path

import apsw
import numpy as np
import trio
from reverie.daemon.config import IndexConfig
from reverie.errors import ReverieError
from reverie.store import vectors
from reverie.store.connection import open_connection
from reverie.store.database import Database
from reverie.store.embed_lexical import LexicalEmbedder
from reverie.store.embed_worker import RemoteEmbedder
from reverie.store.embedding import (
    Embedder,
    Vectors,
    embedder_for_model,
)
from reverie.store.index_apply import apply_changes
from reverie.store.index_file import CorruptIndex, read_header
from reverie.store.index_generation import Abandoned as _Abandoned
from reverie.store.index_generation import DocFreq as DocFreq
from reverie.store.index_generation import Generation as _Generation
from reverie.store.index_generation import IndexView as IndexView
from reverie.store.index_generation import Progress as Progress
from reverie.store.index_generation import query_vector as _query_vector
from reverie.store.index_pacing import pace
from reverie.store.scoped_index import stored_vectors
from reverie.store.vector_index import DEFAULT_NAME, HnswParams, Neighbours, VectorIndex
from reverie.store.vectors import Change

log = logging.getLogger("reverie.store.indexer")
SAVE_CHUNK = 256  # vectors stored per write job
INDEX_DIR = "index"
REBUILD_THREADS = 2
# Deep sleep's compaction: deleted slots (forgotten, archived, superseded
# memories: hnswlib only marks them) past this share of the graph make the
# indexer rebuild it from the stored vectors. Searches still walk deleted
# nodes, and new vectors reuse their slots only one by one.
COMPACT_SHARE = 0.25
# A burst: memories written at this rate or more (counted since the index
# last started to catch up, over at least delay_s). A session's hooks make a few a
# second; a bulk post of event batches (a spool drained, several agents at
# once) thousands. Then the lag bound is BURST_FACTOR * max_lag_s: indexing
# a memory costs about 4x its write (lexical embedder 70 µs, which holds the
# GIL, HNSW insertion 120 µs; the write path ~50 µs per event), so on 2 cores
# an index catching up every max_lag_s during the burst slowed ingest of a
# session's events from 20,000/s to 15,400-17,000/s.
BURST_RATE = 200.0
BURST_FACTOR = 5.0


class Indexer:
    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        data_dir: Path,
        cfg: IndexConfig,
        *,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.directory = data_dir / INDEX_DIR
        self.progress = Progress(model=embedder.model_id if cfg.enabled else "")
        self._embedder = embedder
        self._serving: _Generation | None = None
        self._wake = trio.Event()
        self._switch: Embedder | None = None
        self._on_progress = on_progress
        self._conn: apsw.Connection | None = None
        self._stopping = False
        self._writes = 0  # memories written so far, as notified (for the write rate)
        self._waited = 0  # _writes when the last wait for a quiet period ended
        self.failures = 0
        self._remote: RemoteEmbedder | None = None  # the embed worker, once used
        # Clients being served? (daemon/metrics.py METRICS.serving): pacing. None: never.
        self.busy: Callable[[], bool] | None = None
        # Waits (at most its argument, in s) until no request is being handled
        # (daemon/metrics.py METRICS.wait_quiet): the steps go in the gaps. None: never.
        self.quiet: Callable[[float], bool] | None = None

    # -- what searches use ------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._serving is not None

    @property
    def model(self) -> str:
        return self._serving.embedder.model_id if self._serving else ""

    @property
    def vectors(self) -> int:
        return self._serving.index.live_count if self._serving else 0

    @property
    def indexed_seq(self) -> int:
        return self._serving.seq if self._serving else 0

    def workspace_indexes(self) -> tuple[int, int]:
        """Small workspaces with an index of their own, and those still waiting for one."""
        gen = self._serving
        if gen is None:
            return 0, 0
        small = gen.members.small()
        built = sum(1 for ws in small if gen.scoped.get(ws) is not None)
        return len(gen.scoped.by_ws), len(small) - built

    def neighbours(
        self, query: str, k: int, *, workspace: str | None, doc_freq: DocFreq
    ) -> Neighbours | None:
        """Nearest memories to the query text (blocking; call from a reader thread).

        None when there is no index yet or the embedder fails: the caller then
        searches lexically only.
        """
        gen = self._serving
        if gen is None:
            return None
        try:
            vec = _query_vector(gen.embedder, query, doc_freq)
        except ReverieError as e:
            log.warning("query embedding failed, searching lexically only: %s", e.message)
            return None
        if not np.any(vec):
            return None
        allowed = share = None
        if workspace is not None:
            scoped = gen.scoped.query(workspace, vec, k)
            if scoped is not None:
                return scoped
            found = gen.members.allowed(workspace)
            if found is None:
                return Neighbours(np.zeros(0, np.int64), np.zeros(0, np.float32))
            allowed, share = found
        return gen.index.query(vec, k, allowed, share=share)

    def view(self, model: str, workspace: str) -> IndexView | None:
        """The index as REM searches it by vector; None unless it serves `model`."""
        gen = self._serving
        if gen is None or gen.embedder.model_id != model:
            return None
        scoped = gen.scoped.get(workspace)
        if scoped is not None:
            return IndexView(gen.seq, scoped.query_many)
        found = gen.members.allowed(workspace)
        if found is None:
            return None
        allowed, share = found
        index = gen.index
        return IndexView(gen.seq, lambda vecs, k: index.query_many(vecs, k, allowed, share=share))

    def notify(self, changes: int = 1) -> None:
        """A write of `changes` memories committed: catch up soon."""
        self._writes += changes
        self._wake.set()

    @property
    def slots(self) -> int:
        """The serving graph's slots: live vectors plus deleted ones not yet reused."""
        return self._serving.index.count if self._serving else 0

    def compact(self, min_share: float = COMPACT_SHARE) -> float | None:
        """Rebuild without the deleted slots if they are `min_share` of the graph or more.

        Returns that share when a rebuild was asked for, else None. The rebuild
        uses the vectors stored in SQLite (no re-embedding) and the current
        index serves until the new one is ready, as for a model switch.
        """
        gen = self._serving
        if gen is None or self._switch is not None or gen.index.count == 0:
            return None
        share = 1.0 - gen.index.live_count / gen.index.count
        if share < min_share:
            return None
        log.info("index_compaction deleted_share=%.2f slots=%d", share, gen.index.count)
        self._switch = self._embedder
        self.notify()
        return share

    def switch_model(self, embedder: Embedder) -> None:
        """Re-embed everything with another model; the old index serves meanwhile."""
        if embedder.model_id != self.model:
            self._switch = embedder
            self.notify()

    # -- the background task ------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # the daemon is ready before the index is
        if not self.cfg.enabled:
            self._set("off", message="vector index disabled in the config")
            return
        self._conn = await trio.to_thread.run_sync(
            lambda: open_connection(self.db.path, readonly=True)
        )
        try:
            loaded = await trio.to_thread.run_sync(self._load, self._embedder)
            if loaded is None:
                # Another model's index? Serve it while the configured model re-embeds.
                loaded = await trio.to_thread.run_sync(self._load_previous)
                if loaded is not None:
                    self._switch = self._embedder
            if loaded is not None:
                loaded.save_due = trio.current_time() + self.cfg.save_interval_s
                loaded.files_due = trio.current_time() + self.cfg.busy_file_save_s
                self._serving = loaded
                self._set("ready", model=loaded.embedder.model_id)
                gc.freeze()  # the loaded index's objects are long-lived
            while True:
                if self._serving is None or self._switch is not None:
                    await self._rebuild(self._switch or self._embedder)
                else:
                    await self._catch_up()
                    await self._maybe_save()
                    if await trio.to_thread.run_sync(self._build_scoped):
                        self._wake.set()  # more to build: after a catch-up, not a nap
                with trio.move_on_after(self._idle_wait()):
                    await self._wake.wait()
                if self._wake.is_set():
                    await self._quiet_period()
                self._wake = trio.Event()
        finally:
            with trio.CancelScope(shield=True):
                await self.close()

    async def _quiet_period(self) -> None:
        """Wait until writes pause, or the lag bound has passed.

        Normally a pause is delay_s without a write and the bound max_lag_s
        after the first pending write. During a burst (memories written at
        BURST_RATE a second or more since the last wait ended, counted over
        at least delay_s) both stretch BURST_FACTOR times: a loaded machine
        answers a burst's batches slowly, and the gaps between them are not
        the pause the index waits for.

        A save that falls due meanwhile is made then (writes during it count
        as writes): deferring the catch-up must not defer the save too.
        """
        cfg = self.cfg
        start = now = trio.current_time()
        first = self._waited  # the writes since the last wait ended are pending
        limit = start + cfg.max_lag_s
        stretched = False
        while True:
            burst = self._writes - first >= BURST_RATE * max(now - start, cfg.delay_s)
            if burst and not stretched:
                stretched = True
                limit = start + BURST_FACTOR * cfg.max_lag_s
            pause = cfg.delay_s * (BURST_FACTOR if burst else 1.0)
            self._wake = trio.Event()
            deadline = min(now + pause, limit)
            if self._save_due() < deadline:
                with trio.move_on_at(self._save_due()):
                    await self._wake.wait()
                await self._maybe_save()  # if it is due: a write just then does not defer it
            with trio.move_on_at(deadline):
                await self._wake.wait()
            now = trio.current_time()
            if not self._wake.is_set() and now < limit:
                break  # writes paused
            if now >= limit and (stretched or self._writes - first < BURST_RATE * (now - start)):
                break
        self._waited = self._writes

    def stop(self) -> None:
        """Abandon a rebuild in progress (at shutdown: it restarts next time)."""
        self._stopping = True

    def _idle_wait(self) -> float:
        if self.failures:
            return min(60.0, 2.0**self.failures)
        due = self._save_due()
        if due == float("inf"):
            return self.cfg.save_interval_s
        return max(0.0, due - trio.current_time())

    async def close(self) -> None:
        """Save what changed since the last save (called at shutdown)."""
        gen = self._serving
        if gen is not None and gen.dirty:
            await trio.to_thread.run_sync(self._save, gen)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._remote is not None:
            remote, self._remote = self._remote, None
            await trio.to_thread.run_sync(remote.close)

    # -- loading and building (worker threads) --------------------------------------

    def _params(self) -> HnswParams:
        # Following writes, insertions use one thread: the other core is the
        # write path's and the searches' (ingest of a session's events with
        # the index on: 15,500/s with two, 17,900/s with one). A rebuild,
        # which nobody waits on, uses REBUILD_THREADS.
        return HnswParams(
            m=self.cfg.m,
            ef_construction=self.cfg.ef_construction,
            ef=self.cfg.ef,
            threads=1,
            fork_save=self.cfg.fork_save,
        )

    def _load(self, embedder: Embedder) -> _Generation | None:
        try:
            index, header = VectorIndex.load(
                self.directory, embedder.model_id, embedder.dim, params=self._params()
            )
        except CorruptIndex as e:
            log.warning("vector index cannot be used, rebuilding from SQLite: %s", e.message)
            return None
        gen = _Generation(embedder, index, header.seq)
        assert self._conn is not None
        for mid, ws in self._conn.execute(
            "SELECT id, workspace FROM memories WHERE state = 'active' AND tier != 'archived'"
        ):
            if index.contains(int(mid)):
                gen.members.set(int(mid), str(ws))
        gen.scoped.load(self.directory, gen.members.small(), header.seq)
        log.info(
            "vector index loaded model=%s vectors=%d seq=%d workspace indexes=%d",
            embedder.model_id,
            index.live_count,
            header.seq,
            len(gen.scoped.by_ws),
        )
        return gen

    def _load_previous(self) -> _Generation | None:
        try:
            header = read_header(self.directory, DEFAULT_NAME)
        except CorruptIndex:
            return None
        if header.model_id == self._embedder.model_id:
            return None  # same model, unusable file: nothing older to serve
        previous = embedder_for_model(header.model_id)
        if previous is None or previous.dim != header.dim:
            return None
        log.info(
            "serving the %s index while %s re-embeds", header.model_id, self._embedder.model_id
        )
        return self._load(previous)

    async def _rebuild(self, embedder: Embedder) -> None:
        self._set("rebuilding", model=embedder.model_id, done=0, total=0)
        try:
            gen = await trio.to_thread.run_sync(self._build, embedder, abandon_on_cancel=False)
        except _Abandoned:
            return
        except ReverieError as e:
            self.failures += 1
            self._set("failed", message=f"rebuild failed: {e.message}")
            log.error("vector index rebuild failed (search stays lexical): %s", e.message)
            return
        self._serving = gen
        self._embedder = embedder
        self._switch = None
        self.failures = 0
        self._set("ready", model=embedder.model_id)  # serve now; saving can take a while
        await self._save_now(gen)
        while await self.db.writer.run(lambda c: vectors.drop_other_models(c, embedder.model_id)):
            pass  # in small deletes, so users' writes interleave

    def _build(self, embedder: Embedder) -> _Generation:
        conn = self._conn
        assert conn is not None
        start_seq = vectors.max_seq(conn)
        total = vectors.active_count(conn)
        dim = embedder.dim or len(embedder.embed(["dimension probe"])[0])
        params = dataclasses.replace(
            self._params(), capacity=max(1024, total + total // 4), threads=REBUILD_THREADS
        )
        index = VectorIndex(dim, model_id=embedder.model_id, params=params)
        gen = _Generation(embedder, index, start_seq)
        done = 0
        self._set("rebuilding", model=embedder.model_id, done=0, total=total)
        for batch in vectors.active_batches(conn, self.cfg.batch):
            if self._stopping:
                raise _Abandoned
            self._apply(gen, batch)
            done += len(batch)
            self._set("rebuilding", model=embedder.model_id, done=done, total=max(total, done))
        log.info(
            "vector index built model=%s vectors=%d in %.1fs",
            embedder.model_id,
            gen.index.live_count,
            time.monotonic() - self.progress.started,
        )
        serving = self._params()
        gen.index.set_threads(serving.threads)
        gen.scoped.params = dataclasses.replace(gen.scoped.params, threads=serving.threads)
        return gen

    # -- following changes ----------------------------------------------------------

    async def _catch_up(self) -> None:
        gen = self._serving
        while gen is not None:
            try:
                n = await trio.to_thread.run_sync(self._catch_up_batch, gen)
            except ReverieError as e:
                self.failures += 1
                log.warning("vector index is behind (will retry): %s", e.message)
                return
            self.failures = 0
            if n < self.cfg.batch:
                return
            # Writes outpace the index, so every batch is full: save on time
            # anyway, or a crash would leave the restart all of this to redo.
            await self._maybe_save()

    def _catch_up_batch(self, gen: _Generation) -> int:
        assert self._conn is not None
        changes = vectors.changed_since(self._conn, gen.seq, self.cfg.batch)
        if changes:
            self._apply(gen, changes)
            gen.seq = changes[-1].seq
        return len(changes)

    def _apply(self, gen: _Generation, changes: list[Change]) -> None:
        """Bring these memories' vectors into `gen` (blocking)."""
        assert self._conn is not None
        apply_changes(self._conn, gen, changes, embed=self._embed_documents, pace=self._pace)

    def _pace(self, worked_s: float) -> None:
        pace(self.busy, worked_s, self.quiet)

    def _embed_documents(self, embedder: Embedder, texts: list[str]) -> Vectors:
        """The lexical embedder's vectors from the embed worker process
        (store/embed_worker.py: off the daemon's GIL), others' here."""
        if not self.cfg.embed_process or not isinstance(embedder, LexicalEmbedder):
            return embedder.embed(texts)
        remote = self._remote
        if remote is None or remote.local is not embedder:
            if remote is not None:
                remote.close()  # a reload switched embedders
            remote = self._remote = RemoteEmbedder(embedder, embedder.dim)
        return remote.embed(texts)

    def _build_scoped(self) -> bool:
        """Give one more small workspace its own index; True if others still lack one.

        One at a time, so that the loop catches up with writes in between.
        """
        gen, conn = self._serving, self._conn
        if gen is None or conn is None:
            return False
        missing = [ws for ws in gen.members.small() if gen.scoped.get(ws) is None]
        if not missing:
            return False
        ws, model = missing[0], gen.embedder.model_id
        started = time.monotonic()
        built = gen.scoped.build(
            ws,
            gen.members.ids_of(ws),
            read=lambda ids: stored_vectors(conn, model, ids, gen.unsaved),
            stopping=lambda: self._stopping,
        )
        if not built:
            return False  # abandoned, or vectors missing: a rebuild sorts it out
        gen.dirty = True
        log.info(
            "workspace index built workspace=%s vectors=%d in %.1fs",
            ws,
            gen.members.sizes.get(gen.members.codes[ws], 0),
            time.monotonic() - started,
        )
        return len(missing) > 1

    def _save_due(self) -> float:
        """When the serving index must be saved (trio clock); inf if it has no changes."""
        gen = self._serving
        return gen.save_due if gen is not None and gen.dirty else float("inf")

    async def _maybe_save(self) -> None:
        gen = self._serving
        now = trio.current_time()
        if gen is not None and now >= self._save_due():
            # While clients are served, only the vectors, until the files are due too.
            busy = self.busy is not None and self.busy()
            await self._save_now(gen, files=not busy or now >= gen.files_due)

    async def _save_now(self, gen: _Generation, *, files: bool = True) -> None:
        """Save in a worker thread; the next save is due save_interval_s after this one began.

        `files`: the index files too (else the vectors only: the generation
        stays dirty, and its files are written by a later save).

        It takes 0.7-1.6 s at 100k vectors with twelve workspace indexes (see
        the module docstring for what it blocks). The next one is also at
        least as long after this one ended as this one took, so that an index
        whose save outlasts the interval still spends half its time catching
        up. A failed save is retried one interval later.
        """
        began = trio.current_time()
        await trio.to_thread.run_sync(self._save, gen, files)
        ended = trio.current_time()
        gen.save_due = max(began + self.cfg.save_interval_s, ended + (ended - began))
        if files:
            gen.files_due = began + self.cfg.busy_file_save_s

    def _save(self, gen: _Generation, files: bool = True) -> None:
        seq = gen.seq
        model = gen.embedder.model_id
        pending = list(gen.unsaved.items())
        try:
            # Small jobs, so that users' writes interleave with these; paced
            # while clients are served (~40 MB of WAL after a minute of a
            # 64-client load: back to back, a burst every commit waited behind).
            for start in range(0, len(pending), SAVE_CHUNK):
                items = [(mid, h, v) for mid, (h, v) in pending[start : start + SAVE_CHUNK]]
                began = time.perf_counter()
                self.db.writer.run_sync(functools.partial(vectors.save, model=model, items=items))
                pace(self.busy, time.perf_counter() - began, self.quiet)
            for mid, _ in pending:
                gen.unsaved.pop(mid, None)
            if not files:
                return
            gen.index.save(self.directory, seq=seq)
            gen.scoped.save(self.directory, seq)
        except ReverieError as e:
            log.error("saving the vector index failed: %s", e.message)
            return
        gen.dirty = False

    def _set(self, phase: str, **changes: object) -> None:
        self.progress.phase = phase
        for key, value in changes.items():
            setattr(self.progress, key, value)
        if self._on_progress is not None:
            self._on_progress(self.progress)
