"""Load: 64 concurrent clients, with slow-loris and idle clients and a full connection table.

One real daemon, small limits from its config file. 64 clients (threads,
each with its own connection) mix remember, search and post_events for a
few seconds: first alone (the baseline), then while idle clients hold
connections, slow-loris clients start frames they never finish (again and
again: each is dropped after frame_timeout_s and reconnects) and the
connection table is full, so one more connection is refused with a clear
error. Every request must succeed, and the 64 must be served about as well
as in the baseline: the bound is relative to the baseline measured in the
same run (the machine is shared), and generous.
"""

from __future__ import annotations

import select
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import Daemon, raw_connect
from reverie.errors import TooManyConnections
from reverie.rpc.client import Client
from reverie.rpc.proto_events import Event, PostEvents
from reverie.rpc.protocol import RawResponse, Remember, Search
from wire import HELLO, packed

WORKERS = 64
IDLE = 6
LORIS = 6
FRAME_TIMEOUT = 0.5
# The monitor (this test's own client) takes one slot more.
CAP = WORKERS + IDLE + LORIS + 1
BASELINE_S = 2.0
LOADED_S = 3.0
# How late a drop may come on a busy machine (two shared cores).
SLACK = 3.0

_response = msgspec.msgpack.Decoder(RawResponse)


def _config() -> str:
    return (
        "[daemon]\n"
        f"frame_timeout_s = {FRAME_TIMEOUT}\n"
        "idle_timeout_s = 120\n"  # longer than the test: idle clients keep their slots
        f"max_connections = {CAP}\n"
        "[index]\nenabled = false\n"  # the index's build is not what this test is about
    )


def _request(worker: int, n: int) -> Any:
    """Worker `worker`'s n-th request: 4 remember : 4 search : 2 post_events."""
    match n % 10:
        case 0 | 3 | 5 | 8:
            return Remember(content=f"load worker {worker} note {n}: cache warm-up on deploy")
        case 1 | 4 | 6 | 9:
            return Search(query=f"cache deploy worker {worker}", limit=5)
        case _:
            return PostEvents(
                events=[
                    Event(
                        key=f"load-{worker}-{n}-{i}",
                        harness="claude-code",
                        type="UserPromptSubmit",
                        workspace="git:github.com/example/load",
                        session_id=f"s-{worker}",
                        payload={"prompt": f"worker {worker} asks {n}.{i} about the cache"},
                    )
                    for i in range(10)
                ]
            )


class Workers:
    """64 clients in threads, each recording (send time, latency) or its failure."""

    def __init__(self, d: Daemon) -> None:
        self.stop = threading.Event()
        self.lat: list[list[tuple[float, float]]] = [[] for _ in range(WORKERS)]
        self.failures: list[str] = []
        self.clients = [d.client(timeout=60).connect() for _ in range(WORKERS)]
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(WORKERS)]

    def _run(self, i: int) -> None:
        c, n = self.clients[i], 0
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                c.call(_request(i, n))
            except Exception as e:
                self.failures.append(f"worker {i} request {n}: {type(e).__name__}: {e}")
                return
            self.lat[i].append((sent, time.monotonic() - sent))
            n += 1
            time.sleep(0.005)  # a little think time: 64 agents, not 64 busy loops

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)
        for c in self.clients:
            c.close()

    def between(self, a: float, b: float) -> list[float]:
        return sorted(ms for w in self.lat for at, ms in w if a <= at < b)


def _greeted(path: Path) -> socket.socket:
    s = raw_connect(path, timeout=10)
    s.sendall(HELLO)
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        chunk = s.recv(65536)
        assert chunk, "closed before answering hello"
        data += chunk
    assert _response.decode(data[4:]).error is None
    return s


def _closed_within(s: socket.socket, limit: float, trickle: bool) -> float | None:
    """Seconds from sending the start of a frame until the daemon closes `s` (None: still
    open after `limit`). With `trickle`, one more byte of the frame every 0.1 s.
    """
    # Timed from before the send: this thread may wait for the GIL after it, while
    # the daemon's frame timeout already runs.
    start = time.monotonic()
    # A 256-byte frame: its header and a few bytes, then silence (or a trickle).
    s.sendall(b"\x00\x00\x01\x00\x82\xa6method")
    while time.monotonic() - start < limit:
        readable, _, _ = select.select([s], [], [], 0.1)
        if readable:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            assert data == b"", f"a slow-loris got an answer: {data!r}"
            return time.monotonic() - start
        if trickle:
            try:
                s.sendall(b"\xc0")
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
    return None


class Loris:
    """Slow-loris clients: connect, greet, begin a frame, never finish it; again when dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.dropped_after: list[float] = []
        self.problems: list[str] = []
        self.first: list[socket.socket] = [_greeted(path) for _ in range(LORIS)]
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i, s in enumerate(self.first):
            t = threading.Thread(target=self._run, args=(s, i % 2 == 1))
            t.start()
            self.threads.append(t)

    def _run(self, s: socket.socket, trickle: bool) -> None:
        while True:
            elapsed = _closed_within(s, FRAME_TIMEOUT + SLACK, trickle)
            s.close()
            if elapsed is None:
                self.problems.append(f"a slow-loris was not dropped after {FRAME_TIMEOUT + SLACK}s")
                return
            self.dropped_after.append(elapsed)
            if self.stop.is_set():
                return
            s = self._reconnect()

    def _reconnect(self) -> socket.socket:
        # The daemon frees a slot once it has seen the close: retry briefly if still full.
        deadline = time.monotonic() + SLACK
        while True:
            s = raw_connect(self.path, timeout=10)
            reply = None
            try:
                s.sendall(HELLO)
                data = s.recv(65536)
                reply = _response.decode(data[4:]) if len(data) > 4 else None
            except OSError:
                pass  # refused and closed under our feet
            if reply is not None and reply.error is None:
                return s
            s.close()
            assert time.monotonic() < deadline, f"cannot reconnect: {reply}"
            time.sleep(0.02)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(FRAME_TIMEOUT + 2 * SLACK)


def _wait(cond: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def test_64_clients_with_slow_loris_idle_clients_and_a_full_connection_table(
    short_tmp: Path,
) -> None:
    d = Daemon(short_tmp, config=_config()).start()
    monitor = d.client(timeout=30).connect()
    workers = Workers(d)
    try:
        workers.start()
        t0 = time.monotonic()
        time.sleep(BASELINE_S)

        # Idle clients and slow-loris clients (all greeted) fill the table.
        idle = [_greeted(d.socket) for _ in range(IDLE)]
        loris = Loris(d.socket)
        _wait(lambda: monitor.status().connections == CAP, "the table did not fill up")
        # One more connection is answered with a clear error, then closed.
        extra = raw_connect(d.socket, timeout=10)
        data = b""
        while chunk := extra.recv(65536):
            data += chunk
        extra.close()
        refusal = _response.decode(data[4:])
        assert refusal.error is not None and refusal.error.code == "too_many_connections"
        assert str(CAP) in refusal.error.message
        with pytest.raises(TooManyConnections):
            Client(d.socket, timeout=10).connect()

        t1 = time.monotonic()
        loris.start()
        time.sleep(LOADED_S)
        t2 = time.monotonic()
        loris.join()
        workers.join()
        t3 = time.monotonic()

        # The idle clients still hold their connections, and are served when they speak.
        for s in idle:
            readable, _, _ = select.select([s], [], [], 0)
            assert not readable, "an idle client was dropped before idle_timeout_s"
            s.sendall(packed({"method": "ping", "id": 7}))
            reply = s.recv(65536)
            assert reply and _response.decode(reply[4:]).error is None
            s.close()
        monitor.ping()
    finally:
        workers.stop.set()
        monitor.close()

    assert not workers.failures, workers.failures[:5]
    assert not loris.problems, loris.problems
    # Every slow-loris was dropped for its unfinished frame, not before its time.
    assert len(loris.dropped_after) >= LORIS
    assert min(loris.dropped_after) >= FRAME_TIMEOUT * 0.9, loris.dropped_after
    assert max(loris.dropped_after) <= FRAME_TIMEOUT + SLACK, loris.dropped_after

    # The 64 were served throughout, about as well as without the slow-loris.
    base = workers.between(t0 + 0.5, t1)  # after a warm-up
    loaded = workers.between(t1, t2)
    assert base and loaded
    rate_base = len(base) / (t1 - t0 - 0.5)
    rate_loaded = len(loaded) / (t2 - t1)
    summary = (
        f"baseline {len(base)} requests ({rate_base:.0f}/s) p50 {1000 * _p(base, 0.5):.1f} ms "
        f"p90 {1000 * _p(base, 0.9):.1f} ms; with slow-loris {len(loaded)} ({rate_loaded:.0f}/s) "
        f"p50 {1000 * _p(loaded, 0.5):.1f} ms p90 {1000 * _p(loaded, 0.9):.1f} ms; "
        f"workers stopped in {t3 - t2:.1f} s"
    )
    print(summary)
    assert rate_loaded >= rate_base / 4, summary
    assert _p(loaded, 0.5) <= 4 * _p(base, 0.5) + 0.1, summary
    assert _p(loaded, 0.9) <= 4 * _p(base, 0.9) + 0.25, summary
    assert statistics.median(loris.dropped_after) < FRAME_TIMEOUT + SLACK
    with d.client() as c:
        assert c.status().memories["total"] > 0
    assert d.stop() == 0, d.log()
