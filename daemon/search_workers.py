"""Search worker processes: the daemon's side (daemon/search_worker.py is theirs).

`SearchWorkers.run` keeps `[search] workers` processes alive (started on the
first search, not at start-up: a daemon that never searches never pays for
them), restarting one that dies after a back-off. `search()` runs one
search: the vector side in a reader thread here (it needs the HNSW index),
started at once, and the rest in an idle worker. When no worker runs (none
configured, none started yet), the search runs whole in a reader thread, as
it always could; one that no worker takes within WAIT_IDLE_S (all busy), or
whose worker dies mid-search, runs its rest there, with the vector side
already computed. A worker's failure costs latency, never an answer.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import apsw
import msgspec
import trio
from reverie.daemon import logs
from reverie.daemon.config import SearchConfig
from reverie.daemon.search_worker import (
    Answer,
    Failed,
    Finished,
    Ready,
    StartSearch,
    VectorSide,
)
from reverie.daemon.socket_child import spawn
from reverie.errors import error_for_code
from reverie.rpc.framing import DEFAULT_MAX_FRAME, FrameBuffer, encode_frame
from reverie.rpc.protocol import Search
from reverie.store import hybrid
from reverie.store.database import Database
from reverie.store.indexer import Indexer

log = logging.getLogger("reverie.search_workers")

START_TIMEOUT_S = 60.0  # import and open the database (seconds on a loaded machine)
CALL_TIMEOUT_S = 60.0  # one search; a worker slower than this is presumed stuck
WAIT_IDLE_S = 5.0  # a search waits this long for a free worker, then runs here
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
STABLE_S = 60.0  # a worker that lived this long resets the back-off

_encoder = msgspec.msgpack.Encoder()
_answers: msgspec.msgpack.Decoder[Answer] = msgspec.msgpack.Decoder(Answer)


class WorkerLost(Exception):
    """The worker died, hung or answered nonsense: the search runs in-process."""


def next_backoff(previous: float, lived_s: float) -> float:
    """The pause before restarting a worker that lived `lived_s` after a pause of `previous`."""
    if lived_s >= STABLE_S or previous <= 0:
        return BACKOFF_FIRST_S
    return min(BACKOFF_MAX_S, 2 * previous)


class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes], stream: trio.SocketStream) -> None:
        self.proc = proc
        self.stream = stream
        self.frames = FrameBuffer(DEFAULT_MAX_FRAME)
        self.lost = trio.Event()

    @classmethod
    async def start(cls, command: list[str], db_path: Path) -> _Worker:
        proc, mine = await trio.to_thread.run_sync(lambda: spawn(command, str(db_path)))
        worker = cls(proc, trio.SocketStream(trio.socket.from_stdlib_socket(mine)))
        try:
            with trio.fail_after(START_TIMEOUT_S):
                hello = await worker.receive()
            if not isinstance(hello, Ready):
                raise WorkerLost(f"expected Ready, got {type(hello).__name__}")
        except BaseException:
            await worker.close()
            raise
        return worker

    async def receive(self) -> Answer:
        while True:
            for body in self.frames.frames():
                try:
                    answer: Answer = _answers.decode(body)
                    return answer
                except msgspec.DecodeError as e:
                    raise WorkerLost(f"undecodable answer: {e}") from e
            data = await self.stream.receive_some(1 << 16)
            if not data:
                raise WorkerLost(f"worker {self.proc.pid} closed its socket")
            self.frames.feed(data)

    async def send(self, msg: StartSearch | VectorSide) -> None:
        await self.stream.send_all(encode_frame(_encoder.encode(msg)))

    async def close(self) -> None:
        """Close the socket (an idle worker exits on EOF), kill it, reap it."""
        with trio.CancelScope(shield=True):
            await self.stream.aclose()
            self.proc.kill()
            with trio.move_on_after(5):
                await trio.to_thread.run_sync(self.proc.wait)


class SearchWorkers:
    def __init__(self, db_path: Path, count: int, *, command: list[str] | None = None) -> None:
        self.db_path = db_path
        self.count = count
        self.command = command or [sys.executable, "-m", "reverie.daemon.search_worker"]
        self.alive = 0
        self.restarts = 0
        self._wanted = trio.Event()
        # Idle workers; the buffer holds them all, so giving one back never waits.
        self._idle_tx, self._idle_rx = trio.open_memory_channel[_Worker](max(1, count))
        self._workers: set[_Worker] = set()

    @property
    def pids(self) -> list[int]:
        return sorted(w.proc.pid for w in self._workers)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the workers alive until cancelled; they start on the first search."""
        task_status.started()
        if self.count <= 0:
            return
        try:
            await self._wanted.wait()
            async with trio.open_nursery() as nursery:
                for slot in range(self.count):
                    nursery.start_soon(self._keep, slot)
        finally:
            for w in list(self._workers):
                await w.close()

    async def _keep(self, slot: int) -> None:
        pause = 0.0
        while True:
            began = time.monotonic()
            try:
                worker = await _Worker.start(self.command, self.db_path)
            except (OSError, WorkerLost, trio.TooSlowError) as e:
                pause = next_backoff(pause, 0.0)
                logs.event(
                    log,
                    logging.WARNING,
                    "search_worker_failed",
                    slot=slot,
                    error=str(e) or type(e).__name__,
                    retry_s=pause,
                )
                await trio.sleep(pause)
                continue
            self._workers.add(worker)
            self.alive += 1
            logs.event(log, logging.INFO, "search_worker_started", slot=slot, pid=worker.proc.pid)
            self._idle_tx.send_nowait(worker)
            try:
                await worker.lost.wait()
            finally:
                self.alive -= 1
                self._workers.discard(worker)
                await worker.close()
            lived = time.monotonic() - began
            pause = next_backoff(pause, lived)
            self.restarts += 1
            logs.event(
                log,
                logging.WARNING,
                "search_worker_lost",
                slot=slot,
                pid=worker.proc.pid,
                exit=worker.proc.returncode,
                restart_in_s=pause,
            )
            await trio.sleep(pause)

    async def search(
        self, db: Database, req: Search, cfg: SearchConfig, indexer: Indexer | None
    ) -> hybrid.Outcome | None:
        """The search run by a worker (its lexical side while the daemon looks the
        vector neighbours up), or None if no worker runs (none started yet, or
        all lost and waiting for their restart).

        The vector side starts at once, not when a worker is free: under load a
        search waits for one (both busy) as often as not, and it then finds
        its neighbours ready (64 clients: the slowest searches had waited 10-30
        ms for a worker, then 2-16 ms more for their vector side)."""
        self._wanted.set()
        if self.alive == 0:
            return None
        side = _Side(wanted=(req.mode or cfg.mode) != "lexical")
        # Shielded from the moment the vector side starts: a client gone
        # mid-search must not leave a worker out of step (an unread answer, a
        # missing vector side). The wait for a worker is bounded (WAIT_IDLE_S).
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                if side.wanted:
                    nursery.start_soon(side.compute, db, req, cfg, indexer)
                worker: _Worker | None = None
                with trio.move_on_after(WAIT_IDLE_S):
                    worker = await self._idle_rx.receive()
                if worker is None:
                    answer: Answer | None = None  # all busy for too long: this one runs here
                else:
                    answer = await self._exchange(worker, req, cfg, side)
        if side.failed is not None:
            raise side.failed
        if answer is None:  # no worker free in time, or it was lost: the rest here
            return await db.read(lambda c: _in_process(c, req, cfg, side))
        if isinstance(answer, Failed):
            raise error_for_code(answer.code, answer.message)
        assert isinstance(answer, Finished)
        return hybrid.Outcome(hits=answer.hits, mode=answer.mode, notes=answer.notes)

    async def _exchange(
        self, worker: _Worker, req: Search, cfg: SearchConfig, side: _Side
    ) -> Answer | None:
        """StartSearch now, VectorSide once it is computed, then the answer (None:
        the worker is lost and replaced, and the rest of the search runs here)."""
        try:
            with trio.fail_after(CALL_TIMEOUT_S):
                await worker.send(StartSearch(req=req, cfg=cfg))
                await side.done.wait()
                await worker.send(
                    VectorSide(vec=side.vec, notes=side.notes, abort=side.failed is not None)
                )
                answer = await worker.receive()
        except (
            WorkerLost,
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.TooSlowError,
        ) as e:
            logs.event(
                log,
                logging.WARNING,
                "search_worker_error",
                pid=worker.proc.pid,
                error=str(e) or type(e).__name__,
            )
            worker.lost.set()
            return None
        if isinstance(answer, Ready):
            worker.lost.set()  # out of step (a second Ready): replaced
            return None
        self._idle_tx.send_nowait(worker)
        return answer


class _Side:
    """A search's vector side, computed in a reader thread while the search waits
    for a worker (none for a lexical search: `done` from the start)."""

    def __init__(self, *, wanted: bool) -> None:
        self.wanted = wanted
        self.vec: list[tuple[int, float]] | None = None
        self.notes: list[str] = []
        self.failed: BaseException | None = None
        self.done = trio.Event()
        if not wanted:
            self.done.set()

    async def compute(
        self, db: Database, req: Search, cfg: SearchConfig, indexer: Indexer | None
    ) -> None:
        try:
            self.vec = await db.read(
                lambda c: hybrid.vector_side(c, req, cfg=cfg, indexer=indexer, notes=self.notes)
            )
        except Exception as e:  # the worker is told, then it is raised
            self.failed = e
        finally:
            self.done.set()


def _in_process(c: apsw.Connection, req: Search, cfg: SearchConfig, side: _Side) -> hybrid.Outcome:
    """The rest of a search whose vector side is computed, here (no worker answered)."""
    lex = hybrid.lexical_side(c, req, cfg=cfg)
    return hybrid.combine(c, req, cfg=cfg, lex=lex, vec=side.vec, notes=side.notes)


async def search(
    db: Database,
    workers: SearchWorkers | None,
    req: Search,
    cfg: SearchConfig,
    indexer: Indexer | None,
) -> hybrid.Outcome:
    """One search: in a worker process when one is free, else in a reader thread."""
    if workers is not None and workers.count > 0:
        found = await workers.search(db, req, cfg, indexer)
        if found is not None:
            return found
    return await db.read(lambda c: hybrid.run(c, req, cfg=cfg, indexer=indexer))
