"""Slow, idle and greedy clients cannot starve the others.

A real daemon runs with small limits from its config file: read timeouts per
connection (a frame must arrive within frame_timeout_s once it has started; a
connection with nothing to say is closed after idle_timeout_s) and a cap on
connections. While one client misbehaves, another is served throughout.
Pipelining is here too: many requests in one write, answered by id.
"""

from __future__ import annotations

import select
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import Daemon, raw_connect
from reverie.errors import TooManyConnections
from reverie.rpc.client import Client
from reverie.rpc.protocol import Ping, RawResponse, Remember, Search
from wire import HELLO, frame, packed

FRAME_TIMEOUT = 0.5
IDLE_TIMEOUT = 0.5
# How late a disconnection may come on a busy machine (two shared cores).
SLACK = 2.0

_encoder = msgspec.msgpack.Encoder()
_response = msgspec.msgpack.Decoder(RawResponse)


class Wire:
    """A raw connection that reads whole response frames."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = raw_connect(path, timeout)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def replies(self, count: int) -> list[RawResponse]:
        out: list[RawResponse] = []
        while len(out) < count:
            size = int.from_bytes(self.buf[:4], "big")
            if len(self.buf) >= 4 and len(self.buf) >= 4 + size:
                out.append(_response.decode(bytes(self.buf[4 : 4 + size])))
                del self.buf[: 4 + size]
                continue
            chunk = self.sock.recv(65536)
            assert chunk, f"closed after {len(out)} of {count} answers"
            self.buf += chunk
        return out

    def greet(self) -> None:
        self.sock.sendall(HELLO)
        (reply,) = self.replies(1)
        assert reply.error is None

    def wait_closed(self, *, serve: Client, limit: float) -> float:
        """Seconds until the daemon closes this connection, pinging `serve` meanwhile.

        Every ping must be answered: the other client is served throughout.
        """
        start = time.monotonic()
        pings = 0
        while time.monotonic() - start < limit:
            readable, _, _ = select.select([self.sock], [], [], 0.05)
            if readable:
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"expected a plain close, got {data!r}"
                assert pings > 0, "the other client was not exercised"
                return time.monotonic() - start
            serve.ping()
            pings += 1
        raise AssertionError(f"still connected after {limit}s")


def limits_config(**daemon: object) -> str:
    lines = "\n".join(f"{k} = {v}" for k, v in daemon.items())
    return f"[daemon]\n{lines}\n"


@pytest.fixture
def timeouts(short_tmp: Path) -> Iterator[Daemon]:
    cfg = limits_config(frame_timeout_s=FRAME_TIMEOUT, idle_timeout_s=IDLE_TIMEOUT)
    d = Daemon(short_tmp, config=cfg).start()
    yield d
    assert d.stop() == 0, d.log()


# --- read timeouts ----------------------------------------------------------------------


def test_slow_loris_partial_frame_is_cut_after_frame_timeout(timeouts: Daemon) -> None:
    slow = Wire(timeouts.socket)
    slow.greet()
    with timeouts.client(timeout=5) as other:
        # Half a frame, then silence.
        slow.sock.sendall(b"\x00\x00\x01\x00" + b"\x82\xa6method")
        elapsed = slow.wait_closed(serve=other, limit=FRAME_TIMEOUT + SLACK)
        other.ping()
    assert elapsed >= FRAME_TIMEOUT * 0.9
    slow.close()


def test_dribbling_client_is_cut_after_frame_timeout(timeouts: Daemon) -> None:
    """A frame that arrives a byte at a time must still arrive within frame_timeout_s.

    Otherwise a client that sends one byte per (timeout - epsilon) holds its
    connection for as long as the frame is long: up to days for 16 MiB.
    """
    slow = Wire(timeouts.socket)
    slow.greet()
    slow.sock.sendall(b"\x00\x00\x01\x00")  # a 256-byte frame, which never completes
    start = time.monotonic()
    closed = False
    while not closed and time.monotonic() - start < FRAME_TIMEOUT + SLACK:
        readable, _, _ = select.select([slow.sock], [], [], FRAME_TIMEOUT / 4)
        if readable:
            closed = slow.sock.recv(1) == b""
        else:
            try:
                slow.sock.sendall(b"\xc0")  # one more byte, well within the timeout
            except (BrokenPipeError, ConnectionResetError):
                closed = True
    elapsed = time.monotonic() - start
    slow.close()
    assert closed, f"a dribbling frame kept its connection for {elapsed:.1f}s"
    assert elapsed >= FRAME_TIMEOUT * 0.9


def test_idle_client_is_disconnected_and_a_busy_one_is_not(timeouts: Daemon) -> None:
    idle = Wire(timeouts.socket)
    idle.greet()
    with timeouts.client(timeout=5) as busy:
        elapsed = idle.wait_closed(serve=busy, limit=IDLE_TIMEOUT + SLACK)
        assert elapsed >= IDLE_TIMEOUT * 0.9
        # The busy client has been talking for longer than the idle timeout.
        busy.ping()
    idle.close()


def test_a_connection_that_never_says_hello_is_closed_when_idle(timeouts: Daemon) -> None:
    mute = Wire(timeouts.socket)
    with timeouts.client(timeout=5) as other:
        assert mute.wait_closed(serve=other, limit=IDLE_TIMEOUT + SLACK) >= IDLE_TIMEOUT * 0.9
    mute.close()


# --- the connection cap -------------------------------------------------------------------

CAP = 3


def _wait_connections(c: Client, n: int, limit: float = 5.0) -> None:
    """The daemon counts a closed connection only once it has seen the close."""
    deadline = time.monotonic() + limit
    while (count := c.status().connections) != n:
        assert time.monotonic() < deadline, f"{count} connections, expected {n}"
        time.sleep(0.01)


def test_connections_over_the_cap_are_refused_clearly(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config=limits_config(max_connections=CAP)).start()
    clients = [d.client(timeout=5).connect() for _ in range(CAP)]
    try:
        _wait_connections(clients[0], CAP)
        # A raw connection is told why, then closed.
        extra = Wire(d.socket)
        (reply,) = extra.replies(1)
        assert reply.id == 0 and reply.error is not None
        assert reply.error.code == "too_many_connections"
        assert str(CAP) in reply.error.message
        assert extra.sock.recv(1) == b""
        extra.close()
        # The client library turns it into its exception.
        with pytest.raises(TooManyConnections):
            d.client(timeout=5).connect()
        # Refused connections take no slot; the admitted ones are still served.
        for c in clients:
            c.ping()
        _wait_connections(clients[0], CAP)
        # One leaves: its slot is free for a newcomer.
        clients.pop().close()
        _wait_connections(clients[0], CAP - 1)
        clients.append(d.client(timeout=5).connect())
        clients[-1].ping()
        _wait_connections(clients[0], CAP)
    finally:
        for c in clients:
            c.close()
        assert d.stop() == 0, d.log()


# --- pipelining ---------------------------------------------------------------------------

PIPELINED = 200
MALFORMED_EVERY = 25  # a frame that is not msgpack at all (answered with id 0) every 25 requests


def _request(i: int) -> tuple[dict[str, Any], str]:
    """Request number i (its id) and what its answer must be."""
    match i % 5:
        case 0:
            return {"method": "remember", "content": f"pipelined memory {i}"}, "remember"
        case 1:
            return {"method": "ping"}, "ping"
        case 2:
            return {"method": "search", "query": "pipelined", "limit": 5}, "search"
        case 3:
            return {"method": "no_such_method"}, "unknown_method"
        case _:
            return {"method": "get", "memory_id": "not an int"}, "invalid_params"


def test_pipelined_requests_are_all_answered_by_id(daemon: Daemon) -> None:
    wire = Wire(daemon.socket, timeout=30)
    wire.greet()
    expected: dict[int, str] = {}
    data = bytearray()
    malformed = 0
    for i in range(2, PIPELINED + 2):
        body, kind = _request(i)
        data += packed({**body, "id": i})
        expected[i] = kind
        if i % MALFORMED_EVERY == 0:
            data += frame(b"\xc1")
            malformed += 1
    wire.sock.sendall(bytes(data))  # one write
    replies = wire.replies(PIPELINED + malformed)
    wire.close()

    by_id: dict[int, RawResponse] = {}
    zero = []
    for r in replies:
        if r.id == 0:
            zero.append(r)
            continue
        assert r.id not in by_id, f"two answers for id {r.id}"
        by_id[r.id] = r
    assert set(by_id) == set(expected)
    assert [r.error.code if r.error else None for r in zero] == ["malformed"] * malformed

    remembered: dict[int, int] = {}
    for rid, kind in expected.items():
        r = by_id[rid]
        if kind in ("unknown_method", "invalid_params"):
            assert r.error is not None and r.error.code == kind, (rid, r)
            continue
        assert r.error is None, (rid, r.error)
        result = msgspec.msgpack.decode(r.result)
        if kind == "remember":
            assert result["created"]
            remembered[rid] = result["id"]
        elif kind == "search":
            assert isinstance(result["hits"], list)
        else:
            assert result == {}
    # Each remember got its own memory, holding its own text.
    assert len(set(remembered.values())) == len(remembered) == PIPELINED // 5
    with daemon.client() as c:
        for rid, mid in remembered.items():
            assert c.get(mid).content == f"pipelined memory {rid}"
        assert c.status().memories["total"] == len(remembered)


def test_pipelining_through_the_client_library(daemon: Daemon) -> None:
    with daemon.client() as c:
        requests: list[Any] = []
        for i in range(PIPELINED):
            requests.append(Remember(content=f"batch {i}") if i % 2 else Ping())
        results = c.call_many(requests)
        ids = [r.id for r in results[1::2]]
        assert len(set(ids)) == PIPELINED // 2
        assert Counter(type(r).__name__ for r in results) == {
            "RememberResult": PIPELINED // 2,
            "Pong": PIPELINED // 2,
        }
        assert c.call_many([Search(query="batch", limit=1000)])[0].hits


def test_the_other_socket_end_closing_mid_pipeline_is_harmless(daemon: Daemon) -> None:
    s = raw_connect(daemon.socket)
    s.sendall(HELLO + b"".join(packed({"method": "status", "id": i}) for i in range(2, 300)))
    s.shutdown(socket.SHUT_RDWR)
    s.close()  # gone before reading a single answer
    with daemon.client() as c:
        c.ping()
        _wait_connections(c, 1)
    assert "Traceback" not in daemon.log()


def test_the_client_reports_why_it_was_refused_even_before_writing(short_tmp: Path) -> None:
    """A peer that answers and closes before the hello: the reason still reaches the caller."""
    import socket
    import threading

    from reverie.rpc.protocol import ErrorBody, Response

    path = short_tmp / "refuser.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    refusal = packed(Response(id=0, error=ErrorBody(code="too_many_connections", message="full")))

    def refuse() -> None:
        conn, _ = server.accept()
        conn.sendall(refusal)
        conn.close()  # before reading anything: the client's hello hits a closed socket

    t = threading.Thread(target=refuse)
    t.start()
    client = Client(path, timeout=5)
    # Give the peer time to answer and close first, so the write fails.
    real_connect = socket.socket.connect

    def connect_then_wait(self: socket.socket, address: object) -> None:
        real_connect(self, address)  # type: ignore[arg-type]
        t.join(5)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect_then_wait)
        with pytest.raises(TooManyConnections, match="full"):
            client.connect()
    server.close()
