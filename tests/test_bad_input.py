"""Bad input never takes the daemon down.

Every case speaks raw bytes to a real daemon over its socket, half-closes, and
reads until the daemon closes. Then three things must hold: the case got the
answers the protocol promises (an error per bad frame, or a closed
connection), a second client that stayed connected throughout is still
served, and the daemon's log shows no unexpected error. Nothing a bad request
carries may be stored.

The property tests draw arbitrary bytes, arbitrary msgpack values and mutated
valid requests. Their budget is small for CI; raise it for a long run with
REVERIE_FUZZ_EXAMPLES (e.g. REVERIE_FUZZ_EXAMPLES=20000).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import math
import os
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import Daemon, raw_connect
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from reverie.errors import ReverieError
from reverie.rpc.client import Client
from reverie.rpc.proto_events import ListEvents
from reverie.rpc.protocol import (
    METHOD_NAMES,
    PROTOCOL_VERSION,
    Hello,
    Import,
    RawResponse,
    Remember,
    Request,
)
from reverie.store.redaction_objects import redact_obj
from wire import HELLO, frame, packed, parse_replies

# Large enough for the deep-nesting bodies below, small enough to test cheaply.
MAX_FRAME = 256 * 1024
FUZZ_EXAMPLES = int(os.environ.get("REVERIE_FUZZ_EXAMPLES", "300"))
# Codes a frame that does not decode or validate may get; which one depends
# on how far decoding went, and the fuzz tests do not care.
BAD = frozenset({"malformed", "invalid_params", "unknown_method"})
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_encoder = msgspec.msgpack.Encoder()
_request = msgspec.msgpack.Decoder(Request)
_response = msgspec.msgpack.Decoder(RawResponse)


# --- bytes on the wire ------------------------------------------------------------


def exchange(path: Path, data: bytes, *, timeout: float = 10.0) -> list[RawResponse]:
    """Send `data`, half-close, and return every answer read until the daemon closes.

    A daemon that neither answers nor closes makes recv time out, which fails
    the test: every input must end in answers and a closed connection.
    """
    received = bytearray()
    with raw_connect(path, timeout) as s:
        # The daemon may close before reading everything (an oversized frame).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:  # closed with our bytes unread: still closed
                break
            if not chunk:
                break
            received += chunk
    return parse_replies(bytes(received))


def codes(replies: list[RawResponse]) -> list[str]:
    return ["ok" if r.error is None else r.error.code for r in replies]


# --- what the daemon must answer ---------------------------------------------------


def expected_outcomes(data: bytes) -> list[str]:
    """The answers owed for `data` sent on a fresh connection and then half-closed.

    One answer per complete frame, until a frame that ends the connection (an
    oversized length or a hello with the wrong version); a truncated frame at
    the end gets none. "served" marks a valid request after the hello: the
    daemon runs it, so any answer but an internal error will do.
    """
    out: list[str] = []
    greeted, pos = False, 0
    while len(data) - pos >= 4:
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size > MAX_FRAME:
            return [*out, "frame_too_large"]
        body = data[pos + 4 : pos + 4 + size]
        if len(body) < size:
            break
        pos += 4 + size
        outcome = _frame_outcome(body, greeted)
        out.append(outcome)
        if outcome == "version_mismatch":
            break
        greeted = greeted or outcome == "ok"
    return out


def _frame_outcome(body: bytes, greeted: bool) -> str:
    try:
        req = _request.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return "bad"
    if isinstance(req, Hello):
        return "ok" if req.protocol == PROTOCOL_VERSION else "version_mismatch"
    if not greeted:
        return "hello_required"
    return "write" if isinstance(req, Remember | Import) else "served"


def assert_answers_match(replies: list[RawResponse], expected: list[str]) -> None:
    got = Counter("bad" if c in BAD else c for c in codes(replies))
    assert "internal" not in got, f"an internal error: {replies}"
    want = Counter(expected)
    served = want.pop("served", 0)
    missing, extra = want - got, got - want
    assert not missing, f"answers missing: {missing}; got {codes(replies)}, expected {expected}"
    assert extra.total() == served, f"unexpected answers {extra}; expected {expected}"


# --- the daemon under test -----------------------------------------------------------


class Target:
    """The shared daemon, and a second client that must stay served throughout."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.watcher: Client | None = None
        self.log_offset = 0

    def revive(self) -> Client:
        """Start the daemon again if an earlier case killed it (that case failed for it).

        Restarting keeps the cases independent, so hypothesis can replay and
        shrink the one that broke the daemon.
        """
        proc = self.daemon.proc
        if self.watcher is None and proc is not None and proc.poll() is None:
            try:
                self.watcher = self.daemon.client(timeout=10).connect()
            except ReverieError:
                proc.wait(10)  # it is dying: let it finish, then start a new one
        if proc is None or proc.poll() is not None:
            self.close()
            self.daemon.start()
        if self.watcher is None:
            self.watcher = self.daemon.client(timeout=10).connect()
        return self.watcher

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None

    def send(self, data: bytes) -> list[RawResponse]:
        self.revive()
        self.log_offset = len(self.daemon.log())
        replies = exchange(self.daemon.socket, data)
        self.check()
        return replies

    def check(self) -> None:
        proc, watcher = self.daemon.proc, self.watcher
        assert proc is not None and watcher is not None
        try:
            watcher.ping()
        except ReverieError as e:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)  # if it is dying, say so with its log
            self.close()
            raise AssertionError(f"the second client lost service ({e}):\n{self.new_log()}") from e
        assert proc.poll() is None, f"the daemon died ({proc.returncode}):\n{self.new_log()}"
        assert_no_error_logged(self.daemon.log()[self.log_offset :])

    def new_log(self) -> str:
        """What the daemon logged during the current case (its tail, if long)."""
        return _tail(self.daemon.log()[self.log_offset :])

    @contextlib.contextmanager
    def diagnosed(self) -> Iterator[None]:
        """Add the daemon's fate and log to a failed assertion about its answers."""
        try:
            yield
        except AssertionError as e:
            proc = self.daemon.proc
            assert proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)  # a daemon that is dying has a traceback to show
            fate = "running" if proc.poll() is None else f"exited with {proc.returncode}"
            raise AssertionError(
                f"{e}\n--- the daemon is {fate}; its log:\n{self.new_log()}"
            ) from e

    def assert_nothing_stored(self) -> None:
        assert self.revive().status().memories["total"] == 0


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "[...]" + text[-limit:]


def assert_no_error_logged(log: str) -> None:
    for marker in ("Traceback", " ERROR ", " CRITICAL "):
        assert marker not in log, f"unexpected error in the daemon's log:\n{_tail(log)}"


@pytest.fixture(scope="module")
def shared() -> Iterator[Daemon]:
    with tempfile.TemporaryDirectory(prefix="rv-", dir="/tmp") as tmp:
        d = Daemon(Path(tmp), config=f"[daemon]\nmax_frame_bytes = {MAX_FRAME}\n").start()
        try:
            yield d
        finally:
            alive = d.proc is not None and d.proc.poll() is None
            code = d.stop()
            # A daemon that died already failed the test that killed it.
            assert not alive or code == 0, f"unclean exit {code}:\n{d.log()}"


@pytest.fixture
def target(shared: Daemon) -> Iterator[Target]:
    t = Target(shared)
    t.revive()
    try:
        yield t
    finally:
        t.close()


# --- framing ---------------------------------------------------------------------------


@pytest.mark.parametrize("greeted", [False, True])
def test_length_prefix_of_4_gib_is_refused_then_closed(target: Target, greeted: bool) -> None:
    prefix = HELLO if greeted else b""
    replies = target.send(prefix + b"\xff\xff\xff\xff" + b"\x00" * 64 + HELLO)
    assert codes(replies) == ["ok"] * greeted + ["frame_too_large"]
    err = replies[-1]
    assert err.id == 0 and err.error is not None
    assert err.error.data == {"size": 0xFFFFFFFF, "max": MAX_FRAME}
    target.assert_nothing_stored()


def test_frame_just_over_the_maximum_is_refused_then_closed(target: Target) -> None:
    replies = target.send(HELLO + frame(b"\xc0" * (MAX_FRAME + 1)) + HELLO)
    assert codes(replies) == ["ok", "frame_too_large"]
    assert replies[1].error is not None
    assert replies[1].error.data == {"size": MAX_FRAME + 1, "max": MAX_FRAME}


def test_frame_of_exactly_the_maximum_is_read(target: Target) -> None:
    head = {"method": "ping", "id": 5, "pad": ""}
    # An empty string is one byte; a padding over 64 KiB takes a 5-byte str32 header.
    pad = MAX_FRAME - len(_encoder.encode(head)) - 4
    body = _encoder.encode({**head, "pad": "x" * pad})
    assert len(body) == MAX_FRAME
    replies = target.send(HELLO + frame(body) + packed({"method": "ping", "id": 6}))
    # Read and validated (an unknown field), and the connection goes on.
    assert [(r.id, c) for r, c in zip(replies, codes(replies), strict=True)] == [
        (1, "ok"),
        (5, "invalid_params"),
        (6, "ok"),
    ]


@pytest.mark.parametrize(
    "tail",
    [b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x10", b"\x00\x00\x00\x10\x82\xa6meth"],
    ids=["1-byte-header", "3-byte-header", "header-only", "partial-body"],
)
def test_truncated_frame_then_eof_closes_quietly(target: Target, tail: bytes) -> None:
    replies = target.send(HELLO + packed({"method": "ping", "id": 2}) + tail)
    assert [(r.id, c) for r, c in zip(replies, codes(replies), strict=True)] == [
        (1, "ok"),
        (2, "ok"),
    ]


# --- valid msgpack, wrong shape ------------------------------------------------------------

# (body, expected code, expected id), each sent after a valid hello.
WRONG_SHAPES: dict[str, tuple[Any, str, int]] = {
    "int": (7, "malformed", 0),
    "nil": (None, "malformed", 0),
    "string": ("ping", "malformed", 0),
    "list": (["ping", 1], "malformed", 0),
    "empty-map": ({}, "invalid_params", 0),
    "map-without-method": ({"id": 3, "content": "x"}, "invalid_params", 3),
    "method-int": ({"method": 5, "id": 4}, "invalid_params", 4),
    "method-nil": ({"method": None, "id": 4}, "invalid_params", 4),
    "method-list": ({"method": ["ping"], "id": 4}, "invalid_params", 4),
    "method-empty": ({"method": "", "id": 4}, "invalid_params", 4),
    "id-string": ({"method": "ping", "id": "7"}, "invalid_params", 0),
    "id-float": ({"method": "ping", "id": 7.0}, "invalid_params", 0),
    "id-bool": ({"method": "ping", "id": True}, "invalid_params", 0),
    "id-list": ({"method": "ping", "id": [7]}, "invalid_params", 0),
    "int-keys": ({1: "ping", 2: 3}, "malformed", 0),
    "huge-id-unknown-method": ({"method": "nope", "id": 2**64 - 1}, "unknown_method", 0),
    "min-id-unknown-method": ({"method": "nope", "id": -(2**63)}, "unknown_method", -(2**63)),
    "huge-limit": (
        {"method": "search", "id": 8, "query": "q", "limit": 2**64 - 1},
        "invalid_params",
        8,
    ),
    "unknown-field": ({"method": "ping", "id": 9, "bogus": 1}, "invalid_params", 9),
}


@pytest.mark.parametrize("name", list(WRONG_SHAPES))
def test_valid_msgpack_of_the_wrong_shape(target: Target, name: str) -> None:
    body, code, rid = WRONG_SHAPES[name]
    replies = target.send(HELLO + packed(body) + packed({"method": "ping", "id": 99}))
    assert len(replies) == 3, codes(replies)
    hello, err, ping = replies
    assert (hello.id, hello.error) == (1, None)
    assert err.error is not None and (err.id, err.error.code) == (rid, code), err
    assert (ping.id, ping.error) == (99, None)  # the connection survives
    target.assert_nothing_stored()


def test_huge_request_ids_are_echoed(target: Target) -> None:
    replies = target.send(
        HELLO
        + packed({"method": "ping", "id": 2**64 - 1})
        + packed({"method": "ping", "id": -(2**63)})
    )
    assert sorted(r.id for r in replies[1:]) == [-(2**63), 2**64 - 1]
    assert codes(replies) == ["ok", "ok", "ok"]


def test_unknown_method_is_named_and_the_id_echoed(target: Target) -> None:
    replies = target.send(HELLO + packed({"method": "launch_missiles", "id": 9}))
    err = replies[1]
    assert err.error is not None and (err.id, err.error.code) == (9, "unknown_method")
    assert "launch_missiles" in err.error.message
    assert err.error.data is not None and set(err.error.data["methods"]) == METHOD_NAMES


WRONG_PARAMS: dict[str, dict[str, Any]] = {
    "content-int": {"method": "remember", "content": 5},
    "content-empty": {"method": "remember", "content": ""},
    "tags-not-list": {"method": "remember", "content": "x", "tags": "a,b"},
    "importance-range": {"method": "remember", "content": "x", "importance": 2.0},
    "importance-nan": {"method": "remember", "content": "x", "importance": math.nan},
    "kind-pattern": {"method": "remember", "content": "x", "kind": "Not A Kind"},
    "metadata-list": {"method": "remember", "content": "x", "metadata": [1, 2]},
    "memory-id-str": {"method": "get", "memory_id": "1"},
    "memory-id-zero": {"method": "get", "memory_id": 0},
    "forget-missing-id": {"method": "forget"},
    "limit-negative": {"method": "search", "query": "q", "limit": -1},
    "query-bytes": {"method": "search", "query": b"q"},
    "records-not-list": {"method": "import", "records": {"uid": "a"}},
    "record-incomplete": {"method": "import", "records": [{"uid": "a"}]},
    "hello-protocol-str": {"method": "hello", "protocol": "1"},
}


@pytest.mark.parametrize("name", list(WRONG_PARAMS))
def test_wrong_param_types_get_invalid_params_with_the_id(target: Target, name: str) -> None:
    replies = target.send(HELLO + packed({**WRONG_PARAMS[name], "id": 42}))
    assert len(replies) == 2, codes(replies)
    err = replies[1]
    assert err.error is not None and (err.id, err.error.code) == (42, "invalid_params"), err
    target.assert_nothing_stored()


# --- the hello ----------------------------------------------------------------------------


def test_requests_before_hello_are_refused_but_the_connection_stays(target: Target) -> None:
    replies = target.send(
        packed({"method": "ping", "id": 3})
        + packed({"method": "remember", "id": 4, "content": "sneaky"})
        + HELLO
        + packed({"method": "ping", "id": 5})
    )
    assert [(r.id, c) for r, c in zip(replies, codes(replies), strict=True)] == [
        (3, "hello_required"),
        (4, "hello_required"),
        (1, "ok"),
        (5, "ok"),
    ]
    target.assert_nothing_stored()


@pytest.mark.parametrize("version", [PROTOCOL_VERSION + 1, 0, -(2**63), 2**64 - 1])
def test_wrong_protocol_version_is_refused_then_closed(target: Target, version: int) -> None:
    bad_hello = packed({"method": "hello", "id": 8, "protocol": version})
    replies = target.send(bad_hello + HELLO + packed({"method": "ping", "id": 9}))
    assert len(replies) == 1, codes(replies)
    err = replies[0].error
    assert err is not None and (replies[0].id, err.code) == (8, "version_mismatch")
    assert err.data == {"server": PROTOCOL_VERSION}


# --- nesting and text ---------------------------------------------------------------------

DEPTH = 50_000  # far beyond any recursion limit, and within MAX_FRAME


def _e(obj: Any) -> bytes:
    return _encoder.encode(obj)


def _map(*items: bytes) -> bytes:
    """A msgpack map from encoded keys and values, for bodies msgspec would not build."""
    assert len(items) % 2 == 0 and len(items) < 32
    return bytes([0x80 | len(items) // 2]) + b"".join(items)


def _remember(*items: bytes) -> bytes:
    return _map(_e("method"), _e("remember"), _e("id"), _e(3), *items)


DEEP_ARRAY = b"\x91" * DEPTH + b"\x01"
DEEP_MAP = b"\x81\xa1k" * DEPTH + b"\x01"
RAW_BODIES: dict[str, bytes] = {
    "deep-array": DEEP_ARRAY,
    "deep-in-metadata": _remember(
        _e("content"), _e("x"), _e("metadata"), _map(_e("k"), DEEP_ARRAY)
    ),
    "deep-map-metadata": _remember(_e("content"), _e("x"), _e("metadata"), DEEP_MAP),
    "deep-id": _map(_e("method"), _e("ping"), _e("id"), DEEP_ARRAY),
    "deep-method": _map(_e("method"), DEEP_ARRAY, _e("id"), _e(3)),
    "deep-unknown-field": _map(_e("method"), _e("ping"), _e("x"), DEEP_MAP),
    "utf8-in-method": _map(_e("method"), b"\xa4pi\xffg", _e("id"), _e(3)),
    "utf8-in-content": _remember(_e("content"), b"\xa2\xff\xfe"),
    "utf8-in-key": _map(_e("method"), _e("ping"), b"\xa2\xc3\x28", _e(1)),
    "utf8-surrogate": _map(_e("method"), _e("search"), _e("query"), b"\xa3\xed\xa0\x80"),
    "utf8-overlong": _remember(_e("content"), b"\xa2\xc0\xaf"),
    "utf8-in-metadata": _remember(
        _e("content"), _e("x"), _e("metadata"), _map(_e("k"), b"\xa1\x80")
    ),
    # A timestamp ext whose nanoseconds field is over 10**9.
    "bad-timestamp": _remember(
        _e("content"), _e("x"), _e("observed_at"), b"\xd7\xff" + b"\xff" * 8
    ),
    "truncated-msgpack": _map(_e("method"), _e("ping"), _e("id"), _e(7))[:-1],
    "reserved-byte": b"\xc1",
    "empty-body": b"",
}


@pytest.mark.parametrize("greeted", [False, True], ids=["before-hello", "after-hello"])
@pytest.mark.parametrize("name", list(RAW_BODIES))
def test_deep_nesting_and_invalid_utf8_get_an_error(
    target: Target, name: str, greeted: bool
) -> None:
    replies = target.send((HELLO if greeted else b"") + frame(RAW_BODIES[name]))
    got = codes(replies)[greeted:]
    assert len(got) == 1 and got[0] in BAD, got
    target.assert_nothing_stored()


# --- requests that decode but reach the store with values it cannot hold ------------------


def test_metadata_json_cannot_hold_is_refused(target: Target) -> None:
    ext = msgspec.msgpack.Ext(5, b"zz")
    bodies = [
        {"method": "remember", "id": 11, "content": "a", "metadata": {"k": ext}},
        {"method": "remember", "id": 12, "content": "b", "metadata": {"k": {None: 1}}},
        {"method": "remember", "id": 13, "content": "c", "metadata": {"k": {(1, 2): 1}}},
        {"method": "remember", "id": 14, "content": "d", "metadata": {"k": {True: 1}}},
    ]
    replies = target.send(HELLO + b"".join(packed(b) for b in bodies))
    answers = sorted((r.id, c) for r, c in zip(replies, codes(replies), strict=True))
    assert answers == [(1, "ok")] + [(i, "invalid_params") for i in (11, 12, 13, 14)]
    target.assert_nothing_stored()


def test_event_payloads_json_cannot_hold_are_refused_whole(target: Target) -> None:
    """Found by tests/test_fuzz.py: an Ext in a payload was an internal error."""
    good = {"key": "k-good", "harness": "h", "type": "t", "workspace": "w", "payload": {}}
    payloads = [
        {"k": msgspec.msgpack.Ext(5, b"zz")},
        {"k": [1, {"deep": msgspec.msgpack.Ext(1, b"")}]},
        {"k": {None: 1}},
    ]
    bodies = [
        {
            "method": "post_events",
            "id": 31 + i,
            "events": [good, {**good, "key": "k", "payload": p}],
        }
        for i, p in enumerate(payloads)
    ]
    replies = target.send(HELLO + b"".join(packed(b) for b in bodies))
    answers = sorted((r.id, c) for r, c in zip(replies, codes(replies), strict=True))
    assert answers == [(1, "ok")] + [(31 + i, "invalid_params") for i in range(len(payloads))]
    with target.daemon.client() as c:
        assert c.call(ListEvents(limit=10)).events == []  # not even the good one


def test_integers_beyond_sqlite_range_are_not_internal_errors(target: Target) -> None:
    record = {
        "uid": "u1",
        "workspace": "w",
        "kind": "fact",
        "content": "big",
        "created_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        "observed_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        "updated_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        "recall_count": 2**63,
    }
    bodies = [
        {"method": "get", "id": 21, "memory_id": 2**63},
        {"method": "forget", "id": 22, "memory_id": 2**64 - 1},
        {"method": "export", "id": 23, "after_id": 2**63},
        {"method": "import", "id": 24, "records": [record]},
    ]
    replies = target.send(HELLO + b"".join(packed(b) for b in bodies))
    by_id = dict(zip([r.id for r in replies], codes(replies), strict=True))
    assert by_id[21] in {"invalid_params", "not_found"}
    assert by_id[22] in {"invalid_params", "not_found"}
    assert by_id[23] in {"invalid_params", "ok"}
    assert by_id[24] == "invalid_params"
    target.assert_nothing_stored()


# --- property-based ------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=24)
    | st.binary(max_size=24)
    | st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=8))
    | st.datetimes(timezones=st.just(dt.UTC))
)
_keys = st.text(max_size=12) | st.integers(-3, 3) | st.none() | st.booleans()
msgpack_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_fields = sorted({f for cls in Request.__args__ for f in cls.__struct_fields__})
request_like = st.builds(
    lambda params, method, rid: {**params, "method": method, "id": rid},
    st.dictionaries(st.sampled_from(_fields) | st.text(max_size=8), msgpack_values, max_size=4),
    st.sampled_from(sorted(METHOD_NAMES)) | st.text(max_size=12) | msgpack_values,
    st.integers(-(2**63), 2**64 - 1) | msgpack_values,
)

_when = "2024-05-01T12:00:00Z"
RECORD = {
    "uid": "0123abcd",
    "workspace": "w",
    "kind": "fact",
    "content": "imported",
    "tags": ["t"],
    "created_at": _when,
    "observed_at": _when,
    "updated_at": _when,
}
TEMPLATES: list[dict[str, Any]] = [
    {"method": "ping"},
    {"method": "status"},
    {
        "method": "remember",
        "content": "a fuzzed memory",
        "workspace": "w",
        "kind": "fact",
        "tags": ["t"],
        "importance": 0.5,
        "tier": "short",
        "metadata": {"k": "v"},
        "observed_at": _when,
    },
    {"method": "get", "memory_id": 1},
    {"method": "forget", "memory_id": 1, "purge": False, "reason": "r"},
    {"method": "search", "query": "q", "workspace": "w", "limit": 5},
    {"method": "export", "workspace": "w", "after_id": 0, "limit": 10, "include_forgotten": True},
    {"method": "import", "records": [RECORD]},
]
assert all(isinstance(_request.decode(_encoder.encode(t)), Request) for t in TEMPLATES)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A valid request body, then changed: its fields, its id, or its bytes."""
    req = {**draw(st.sampled_from(TEMPLATES)), "id": draw(st.integers(2, 10_000))}
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            req = _mutate(draw, req)
        return _encoder.encode(req)
    body = bytearray(_encoder.encode(req))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(body) - 1))
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "set":
            body[i] = draw(st.integers(0, 255))
        elif op == "insert":
            body[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif len(body) > 1:
            del body[i]
    return bytes(body)


def _mutate(draw: st.DrawFn, req: dict[Any, Any]) -> dict[Any, Any]:
    out = dict(req)
    if not out:
        return {draw(st.sampled_from(_fields) | _keys): draw(msgpack_values)}
    key = draw(st.sampled_from(sorted(out, key=repr)))
    op = draw(st.sampled_from(["drop", "replace", "add", "wrap", "nested"]))
    if op == "drop":
        del out[key]
    elif op == "replace":
        out[key] = draw(msgpack_values)
    elif op == "add":
        out[draw(st.sampled_from(_fields) | _keys)] = draw(msgpack_values)
    elif op == "wrap":
        out[key] = draw(st.sampled_from([[out[key]], {"v": out[key]}, str(out[key])]))
    elif (
        isinstance(out.get("records"), list)
        and out["records"]
        and isinstance(out["records"][0], dict)
    ):
        out["records"] = [_mutate(draw, out["records"][0])]
    return out


def _fuzz_case(target: Target, data: bytes) -> None:
    expected = expected_outcomes(data)
    # A request that validates after the hello would be served; a valid write
    # would be stored, which is not what these tests are about.
    assume("write" not in expected)
    replies = target.send(data)
    with target.diagnosed():
        assert_answers_match(replies, expected)
    target.assert_nothing_stored()


@FUZZ
@given(data=st.binary(max_size=1024), greeted=st.booleans())
def test_fuzz_random_bytes(target: Target, data: bytes, greeted: bool) -> None:
    _fuzz_case(target, (HELLO if greeted else b"") + data)


@FUZZ
@given(
    bodies=st.lists(st.binary(max_size=256), max_size=4),
    tail=st.binary(max_size=8),
    greeted=st.booleans(),
)
def test_fuzz_frames_of_random_bytes(
    target: Target, bodies: list[bytes], tail: bytes, greeted: bool
) -> None:
    data = b"".join(frame(b) for b in bodies) + tail
    _fuzz_case(target, (HELLO if greeted else b"") + data)


@FUZZ
@given(objs=st.lists(msgpack_values | request_like, min_size=1, max_size=4), greeted=st.booleans())
def test_fuzz_msgpack_values(target: Target, objs: list[Any], greeted: bool) -> None:
    _fuzz_case(target, (HELLO if greeted else b"") + b"".join(packed(o) for o in objs))


@FUZZ
@given(body=mutated_requests(), greeted=st.booleans())
def test_fuzz_mutated_requests(target: Target, body: bytes, greeted: bool) -> None:
    _fuzz_case(target, (HELLO if greeted else b"") + frame(body) + packed({"method": "ping"}))


# --- metadata: stored as given, or refused ---------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24)
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _json_safe(value: Any) -> bool:
    """Whether JSON holds `value` exactly (what the store keeps metadata in)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_safe(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int | str)


_serial = itertools.count()  # distinct contents: identical ones would be deduplicated


@pytest.fixture
def stored() -> list[int]:
    """Ids of memories created so far by one property test (its examples share a daemon)."""
    return []


@FUZZ
@given(meta=st.dictionaries(st.text(max_size=8), json_values | msgpack_values, max_size=4))
@example(meta={"COOKIE": 0})  # a secret-looking key: its value is stored redacted
def test_fuzz_metadata_is_kept_or_refused(
    daemon: Daemon, stored: list[int], meta: dict[str, Any]
) -> None:
    content = f"memory number {next(_serial)}"
    req = {"method": "remember", "id": 2, "content": content, "metadata": meta}
    log_offset = len(daemon.log())
    replies = exchange(daemon.socket, HELLO + packed(req))
    assert codes(replies)[0] == "ok" and len(replies) == 2
    answer = replies[1]
    with daemon.client(timeout=10) as c:
        if answer.error is not None:
            assert answer.error.code == "invalid_params", answer.error
            assert not _json_safe(meta), f"JSON-safe metadata refused: {answer.error}"
        else:
            result = msgspec.msgpack.decode(answer.result)
            assert result["created"]
            stored.append(result["id"])
            if _json_safe(meta):
                # Kept exactly, up to redaction: a secret-looking key's value
                # ({"COOKIE": 0}) is stored as its marker, on purpose.
                assert c.get(result["id"]).metadata == redact_obj(meta)
        assert c.status().memories["total"] == len(stored)
    assert_no_error_logged(daemon.log()[log_offset:])


# --- malformed hook payloads, fed to the real hook process ---------------------------------

_BIG = 50 << 20  # 50 MB on stdin
HOOK_STDIN: dict[str, bytes] = {
    "not-json": b"{not json at all",
    "invalid-utf8": b'{"hook_event_name": "Stop", "last_assistant_message": "\xff\xfe\xc0\xaf"}',
    "lone-surrogate-escape": b'{"hook_event_name": "Stop", "x": "\\udc80"}',
    "nul-bytes": b'{"hook_event_name": "Stop", "x": "a\\u0000b"}\x00\x00',
    "json-scalar": b"123456789012345678901234567890",
    "json-list": b'[{"hook_event_name": "Stop"}]',
    "wrong-types": b'{"hook_event_name": ["Stop"], "session_id": {"a": 1}, "cwd": 7, '
    b'"prompt": 5, "tool_input": "x", "transcript_path": false}',
    "deep-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep-in-field": b'{"hook_event_name": "PostToolUse", "tool_response": '
    + b"[" * 200_000
    + b"]" * 200_000
    + b"}",
    "50mb-string": b'{"hook_event_name": "PostToolUse", "tool_use_id": "t", "tool_response": "'
    + b"x" * _BIG
    + b'"}',
    "50mb-garbage": b"\xff\x00" * (_BIG // 2),
    "50mb-truncated": b'{"hook_event_name": "PostToolUse", "tool_response": "' + b"y" * _BIG,
}
HOOK_ARGS = {"claude-code": ("claude-code",), "generic": ("generic", "--event", "fuzz")}


@pytest.mark.parametrize("harness", list(HOOK_ARGS))
def test_malformed_hook_payloads_exit_0_and_store_whole_events_or_nothing(
    daemon: Daemon, short_tmp: Path, harness: str
) -> None:
    from test_hook import Hooks, events

    hooks = Hooks(short_tmp, daemon.socket)
    for name, data in HOOK_STDIN.items():
        before = len(events(daemon))
        hooks.run(data, *HOOK_ARGS[harness], timeout=180)  # exit 0, stderr empty, stdout valid
        stored = events(daemon)
        assert len(stored) - before in (0, 1), name  # one event at most, never part of one
        if len(stored) > before:
            newest = max(stored, key=lambda e: e.id)
            assert len(msgspec.json.encode(newest.payload)) < 2 << 20, name  # trimmed
    assert hooks.spooled() == [], hooks.log_text()
    assert "Traceback" not in hooks.log_text()
    assert daemon.proc is not None and daemon.proc.poll() is None


# --- malformed import files: a clear error naming the line, nothing stored -------------------


def _import(d: Daemon, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reverie", "import", str(path), "--socket", str(d.socket)],
        capture_output=True,
        text=True,
        timeout=300,
        env=d.environ(),
    )


def _record(uid: str, **changes: Any) -> bytes:
    return msgspec.json.encode({**RECORD, "uid": uid, **changes}) + b"\n"


IMPORT_FILES: dict[str, tuple[bytes, str]] = {
    "truncated-last-line": (_record("a") + _record("b")[:40], ":2:"),
    "wrong-type": (_record("a") + _record("b", importance="high"), ":2:"),
    "wrong-shape": (_record("a") + b"[1, 2, 3]\n", ":2:"),
    "unknown-field": (_record("a") + _record("b", bogus=1), ":2:"),
    "duplicate-uid": (_record("a") + _record("b") + _record("a", content="again"), ":3:"),
    "giant-content": (_record("a") + _record("b", content="z" * 1_000_001), ":2:"),
    "invalid-utf8": (_record("a") + _record("b") + b'{"uid": "\xff\xfe"}\n', ":3:"),
    "nul-in-json": (_record("a") + b"\x00\n", ":2:"),
    "deep-nesting": (_record("a") + b"[" * 100_000 + b"]" * 100_000 + b"\n", ":2:"),
}


@pytest.mark.parametrize("name", list(IMPORT_FILES))
def test_malformed_import_files_name_the_line_and_import_nothing(
    daemon: Daemon, short_tmp: Path, name: str
) -> None:
    data, where = IMPORT_FILES[name]
    path = short_tmp / "bad.jsonl"
    path.write_bytes(data)
    out = _import(daemon, path)
    assert out.returncode == 2, out
    assert f"bad.jsonl{where}" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    with daemon.client() as c:
        assert c.status().memories["total"] == 0


def test_an_import_batch_over_the_frame_cap_is_refused_whole(
    daemon: Daemon, short_tmp: Path
) -> None:
    """Twenty valid 900 kB records make one 18 MB request: refused, nothing stored."""
    path = short_tmp / "big.jsonl"
    path.write_bytes(b"".join(_record(f"u{i}", content="w" * 900_000) for i in range(20)))
    out = _import(daemon, path)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out
    assert "frame" in out.stderr.lower(), out.stderr
    with daemon.client() as c:
        assert c.status().memories["total"] == 0
    assert daemon.proc is not None and daemon.proc.poll() is None
