"""SIGTERM: stop accepting, finish in-flight requests, close the database, exit 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import msgspec
from harness import Daemon, raw_connect, record
from reverie.rpc.framing import FrameBuffer, encode_frame
from reverie.rpc.protocol import PROTOCOL_VERSION, Hello, Import, MemoryRecord, RawResponse


def _records(n: int) -> list[MemoryRecord]:
    return [record(f"bulk record {i} about subject {i % 97}", workspace="bulk") for i in range(n)]


def _read_responses(sock: object, want: int) -> list[RawResponse]:
    buf, out = FrameBuffer(), []
    dec = msgspec.msgpack.Decoder(RawResponse)
    while len(out) < want:
        data = sock.recv(65536)  # type: ignore[attr-defined]
        if not data:
            break
        buf.feed(data)
        out.extend(dec.decode(f) for f in buf.frames())
    return out


def test_sigterm_finishes_in_flight_requests(short_tmp: Path) -> None:
    d = Daemon(short_tmp).start()
    enc = msgspec.msgpack.Encoder()
    sock = raw_connect(d.socket, timeout=30)
    big = Import(id=2, records=_records(10_000))  # a request that takes a while
    sock.sendall(
        encode_frame(enc.encode(Hello(id=1, protocol=PROTOCOL_VERSION)))
        + encode_frame(enc.encode(big))
    )
    time.sleep(0.05)  # the import is being written now
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    responses = _read_responses(sock, 2)
    code = d.proc.wait(30)  # type: ignore[union-attr]
    elapsed = time.monotonic() - started
    assert code == 0, d.log()
    assert [r.id for r in responses] == [1, 2]
    assert responses[1].error is None, responses[1].error
    assert elapsed < 10, f"took {elapsed:.1f}s, over the grace period"
    assert "stopped db=closed_cleanly" in d.log()  # logs (issue 6): key=value
    assert not d.socket.exists(), "the daemon must remove the socket it created"
    d.start()
    with d.client() as c:
        assert c.status().memories["active"] == 10_000
    assert d.stop() == 0


def test_sigterm_with_idle_clients_exits_promptly(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config="[daemon]\ngrace_period_s = 2\n").start()
    idle = [d.client().connect() for _ in range(5)]
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 5
    for c in idle:
        c.close()


def test_second_daemon_on_same_data_dir_refuses(short_tmp: Path) -> None:
    first = Daemon(short_tmp, name="a").start()
    second = Daemon(short_tmp, name="b")
    second.data_dir = first.data_dir
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(30) == 78
    assert "another reverie daemon" in second.log() and str(first.data_dir) in second.log()
    with first.client() as c:
        c.ping()  # the first one is unaffected
    assert first.stop() == 0
