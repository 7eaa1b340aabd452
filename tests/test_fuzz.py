"""Fuzzing the protocol boundary: the frame decoder, request decoding, and dispatch.

Hypothesis drives it (atheris, the coverage-guided fuzzer, has no wheel for
this Python 3.11 build; hypothesis is property-based, not coverage-guided, so
the budget is what buys depth). Two layers:

- pure functions, cheap enough for thousands of examples: FrameBuffer fed in
  any chunking, absurd length prefixes, and Server.decode on arbitrary bytes,
  deep nesting, invalid UTF-8 and requests generated from the protocol's own
  Structs (tests/fuzz_strategies.py);
- dispatch against a real daemon over its socket: every request struct in the
  protocol, with plausible or hostile field values. Every request gets exactly
  one answer (a result or an error, never an internal error or a dropped
  connection), the daemon stays up and answers ping, and a request answered
  with an error changed no stored row.

Budget: REVERIE_FUZZ_EXAMPLES=N selects the long profile (N examples per test;
the pure tests run 10x that); without it the CI profile keeps the file well
under a minute. See README, "Testing".
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fuzz_strategies import DEEP_LIST, DEEP_MAP, any_value, decodes, encode, requests
from harness import Daemon, raw_connect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reverie.daemon.config import DaemonConfig
from reverie.daemon.server import Server
from reverie.errors import FrameTooLarge, ReverieError
from reverie.rpc.framing import FrameBuffer, encode_frame
from reverie.rpc.protocol import METHOD_NAMES, RawResponse, Request
from wire import HELLO

_LONG = os.environ.get("REVERIE_FUZZ_EXAMPLES")
settings.register_profile(
    "reverie-fuzz-ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
settings.register_profile(
    "reverie-fuzz-long",
    parent=settings.get_profile("reverie-fuzz-ci"),
    max_examples=int(_LONG or 1),
)
PROFILE = settings.get_profile("reverie-fuzz-long" if _LONG else "reverie-fuzz-ci")
# The cheapest pure tests get three times the budget.
PURE = settings(PROFILE, max_examples=PROFILE.max_examples * 3)
GENERATED = PROFILE
# A real daemon round trip per request: in CI, a quarter of the budget.
DISPATCH = PROFILE if _LONG else settings(PROFILE, max_examples=PROFILE.max_examples // 4)

BAD = frozenset({"malformed", "invalid_params", "unknown_method"})
MAX_FRAME = DaemonConfig().max_frame_bytes


# --- the frame decoder ---------------------------------------------------------------


@PURE
@given(
    bodies=st.lists(st.binary(max_size=300), max_size=6),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
    tail=st.binary(max_size=3),
)
def test_frames_come_out_whole_however_the_bytes_are_cut(
    bodies: list[bytes], cuts: list[int], tail: bytes
) -> None:
    stream = b"".join(encode_frame(b) for b in bodies) + tail
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    buf, out = FrameBuffer(max_frame=1024), []
    for a, b in itertools.pairwise(points):
        buf.feed(stream[a:b])
        out.extend(buf.frames())
    assert out == bodies
    assert buf.pending == bool(tail)


@PURE
@given(size=st.integers(1025, 2**32 - 1), body=st.binary(max_size=64), before=st.binary())
def test_an_oversized_length_is_refused_from_the_header_alone(
    size: int, body: bytes, before: bytes
) -> None:
    buf = FrameBuffer(max_frame=1024)
    buf.feed(encode_frame(before[:1000]))
    assert list(buf.frames()) == [before[:1000]]
    buf.feed(size.to_bytes(4, "big"))  # the body never arrives
    with pytest.raises(FrameTooLarge) as e:
        list(buf.frames())
    assert e.value.data == {"size": size, "max": 1024}


# --- request decoding (the server's own decode, without a socket) ----------------------

_server = Server(DaemonConfig(), handler=None, allowed=frozenset())  # type: ignore[arg-type]


def _check_decoded(body: bytes) -> Request | None:
    """Server.decode never raises, and its verdict agrees with the protocol."""
    out = _server.decode(body)
    expected = decodes(body)
    if isinstance(out, tuple):
        rid, err = out
        assert expected is None, f"{expected!r} refused: {err}"
        assert isinstance(err, ReverieError) and err.code in BAD, err
        assert -(2**63) <= rid < 2**63  # answerable: the id fits the response's int64
        # The error must encode: it is what goes back on the wire.
        msgspec.msgpack.Decoder(RawResponse).decode(_server.encode_error(rid, err)[4:])
        return None
    assert encode(out) == encode(expected)  # by bytes: NaN != NaN
    return out


@PURE
@given(st.binary(max_size=2048))
def test_decode_of_arbitrary_bytes(body: bytes) -> None:
    _check_decoded(body)


@PURE
@given(value=any_value, method=st.sampled_from(sorted(METHOD_NAMES)) | st.text(max_size=8))
def test_decode_of_arbitrary_msgpack_values(value: Any, method: str) -> None:
    _check_decoded(encode(value))
    _check_decoded(encode({"method": method, "id": 3, "x": value}))


@GENERATED
@given(
    req=requests(),
    cut=st.integers(0, 2**20),
    flip=st.tuples(st.integers(0, 2**20), st.integers(0, 255)),
)
def test_decode_of_generated_requests_and_their_corruptions(
    req: dict[Any, Any], cut: int, flip: tuple[int, int]
) -> None:
    body = encode(req)
    _check_decoded(body)
    _check_decoded(body[: cut % (len(body) + 1)])  # truncated
    corrupt = bytearray(body)
    corrupt[flip[0] % len(corrupt)] = flip[1]
    _check_decoded(bytes(corrupt))


@pytest.mark.parametrize("depth", [1_000, 10_000, 200_000])
@pytest.mark.parametrize("shape", ["list", "map", "in-metadata", "as-id"])
def test_decode_of_deep_nesting(depth: int, shape: str) -> None:
    deep = (b"\x91" if shape != "map" else b"\x81\xa1k") * depth + b"\x01"
    body = {
        "list": deep,
        "map": deep,
        "in-metadata": encode(
            {"method": "remember", "id": 4, "content": "x", "metadata": {"k": msgspec.Raw(deep)}}
        ),
        "as-id": encode({"method": "ping", "id": msgspec.Raw(deep)}),
    }[shape]
    assert _check_decoded(body) is None


# --- dispatch against a real daemon ---------------------------------------------------

# Tables whose rows are what users store; an error answer must leave them as
# they were. (Embeddings and recalls are written in the background or as a
# side effect of successful reads, so they are not counted.)
STORED_TABLES = (
    "memories",
    "events",
    "sessions",
    "session_logs",
    "world_state",
    "resource_locks",
    "episodes",
    "steps",
    "memory_versions",
    "capture_settings",
    "dream_runs",
    "dream_ops",
)
# Valid requests of these methods are made invalid before sending: a dream
# run rewrites memories in the background, which the row counts cannot tell
# from a half-stored write; a hello with another version closes the connection
# (tests/test_bad_input.py covers it).
NOT_SERVED = frozenset({"dreams_run", "hello"})


class Fuzzed:
    """A real daemon, a client that must stay served, and row counts read from its database."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.daemon = Daemon(root)
        self.watcher: Any = None
        self.backups = 0

    def ensure_running(self) -> None:
        proc = self.daemon.proc
        if proc is None or proc.poll() is not None:
            self.close()
            self.daemon.start()
        if self.watcher is None:
            self.watcher = self.daemon.client(timeout=30).connect()

    def close(self) -> None:
        if self.watcher is not None:
            with contextlib.suppress(ReverieError):
                self.watcher.close()
            self.watcher = None

    def counts(self) -> dict[str, int]:
        db = self.daemon.data_dir / "reverie.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in STORED_TABLES
            }

    def assert_alive(self) -> None:
        proc = self.daemon.proc
        assert proc is not None
        try:
            self.watcher.ping()
        except ReverieError as e:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            self.close()
            raise AssertionError(f"the daemon stopped answering ({e}):\n{self.tail()}") from e
        assert proc.poll() is None, f"the daemon died:\n{self.tail()}"

    def tail(self) -> str:
        return self.daemon.log()[-4000:]

    def tame(self, req: dict[Any, Any]) -> dict[Any, Any]:
        """Keep requests from reaching outside the test's directory or the dream phases."""
        if req.get("method") == "backup" and isinstance(req.get("path"), str):
            self.backups += 1
            choices = [
                f"{self.root}/bk-{self.backups}.db",
                f"{self.root}/bk-same.db",  # exists after the first: conflict unless force
                f"{self.root}/no/such/dir/bk.db",
                str(self.root),  # a directory
                f"{self.root}/bk\x00nul.db",
            ]
            req = {**req, "path": choices[self.backups % len(choices)]}
        if req.get("method") in NOT_SERVED and decodes(encode(req)) is not None:
            req = {**req, "not a field": 1}
        return req


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    with tempfile.TemporaryDirectory(prefix="rv-", dir="/tmp") as tmp:
        f = Fuzzed(Path(tmp))
        f.ensure_running()
        try:
            yield f
            # After the whole run: still alive, still answering, and a clean stop.
            f.assert_alive()
            log = f.daemon.log()
            assert "Traceback" not in log, f.tail()
        finally:
            f.close()
            alive = f.daemon.proc is not None and f.daemon.proc.poll() is None
            code = f.daemon.stop()
            assert not alive or code == 0, f"unclean exit {code}:\n{f.tail()}"


class Conversation:
    """One raw connection: send a frame, read exactly its one answer."""

    def __init__(self, path: Path) -> None:
        self.sock = raw_connect(path, timeout=60)
        self.buf = bytearray()
        self._decoder = msgspec.msgpack.Decoder(RawResponse)

    def ask(self, frame: bytes) -> RawResponse:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(frame)
        while True:
            if len(self.buf) >= 4:
                size = int.from_bytes(self.buf[:4], "big")
                if len(self.buf) >= 4 + size:
                    body = bytes(self.buf[4 : 4 + size])
                    del self.buf[: 4 + size]
                    return self._decoder.decode(body)
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            assert chunk, "the daemon closed the connection without answering"
            self.buf += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@DISPATCH
@given(reqs=st.lists(requests(), min_size=1, max_size=3), rid=st.integers(1, 2**31))
def test_dispatch_answers_every_hostile_request(
    fuzzed: Fuzzed, reqs: list[dict[Any, Any]], rid: int
) -> None:
    fuzzed.ensure_running()
    log_offset = len(fuzzed.daemon.log())
    conv = Conversation(fuzzed.daemon.socket)
    try:
        assert conv.ask(HELLO).error is None
        for i, raw in enumerate(reqs):
            req = fuzzed.tame(raw)
            req.setdefault("id", rid + i)
            body = encode(req)
            valid = decodes(body)
            before = fuzzed.counts()
            answer = conv.ask(encode_frame(body))
            code = "ok" if answer.error is None else answer.error.code
            assert code != "internal", f"{req.get('method')}: {answer.error}\n{fuzzed.tail()}"
            if valid is None:
                assert code in BAD, (req.get("method"), code)
            else:
                assert answer.id == valid.id, (answer.id, valid.id)
            if answer.error is not None:
                after = fuzzed.counts()
                assert after == before, f"{req.get('method')} failed ({code}) but stored rows"
    finally:
        conv.close()
    fuzzed.assert_alive()
    new_log = fuzzed.daemon.log()[log_offset:]
    for marker in ("Traceback", " CRITICAL "):
        assert marker not in new_log, new_log[-4000:]


def test_deep_and_giant_values_in_every_method(fuzzed: Fuzzed) -> None:
    """Each method once with a 10,000-deep value and once with a 20 MB frame."""
    fuzzed.ensure_running()
    before = fuzzed.counts()
    conv = Conversation(fuzzed.daemon.socket)
    try:
        assert conv.ask(HELLO).error is None
        for n, method in enumerate(sorted(METHOD_NAMES - {"hello"})):
            for deep in (DEEP_LIST, DEEP_MAP):
                answer = conv.ask(encode_frame(encode({"method": method, "id": n, "x": deep})))
                assert answer.error is not None and answer.error.code in BAD, (method, answer)
    finally:
        conv.close()
    # A frame over the cap: a clear error first, then the connection closes.
    conv = Conversation(fuzzed.daemon.socket)
    try:
        assert conv.ask(HELLO).error is None
        giant = encode({"method": "remember", "id": 9, "content": "x" * (MAX_FRAME + 10)})
        answer = conv.ask(encode_frame(giant))
        assert answer.error is not None and answer.error.code == FrameTooLarge.code
        assert answer.error.data is not None and answer.error.data["max"] == MAX_FRAME
    finally:
        conv.close()
    assert fuzzed.counts() == before
    fuzzed.assert_alive()
