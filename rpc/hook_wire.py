"""The hooks' own wire client: the protocol without msgspec.

A hook runs in the agent's critical path, once per prompt and per tool call,
so its start-up is most of its cost. Importing msgspec and the protocol
structs (what `reverie.rpc.client` needs) costs ~25 ms, more than the whole
round trip, so the hook speaks the protocol directly: the subset of msgpack
that requests and results use, written here with the standard library, and
framing as in rpc/framing.py. The daemon validates every request with the
real structs, so a hook that drifted from the protocol gets an error answer
(and spools the event), never a wrong write; tests/test_hook.py checks these
encodings against msgspec and against a real daemon.

`exchange` sends the hello and every request in one write and reads the
answers until a deadline: one round trip, bounded time.
"""

from __future__ import annotations

import _socket
import time
from collections.abc import Sequence
from typing import Any

PROTOCOL_VERSION = 1  # rpc/_base.py PROTOCOL_VERSION (a test checks they agree)
_RECV = 65536


class WireError(Exception):
    """The daemon could not be reached, or answered something unreadable."""


# -- msgpack: the subset the protocol uses ------------------------------------


def pack(obj: Any) -> bytes:
    out = bytearray()
    _pack(obj, out)
    return bytes(out)


def _pack(obj: Any, out: bytearray) -> None:
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        _pack_int(obj, out)
    elif isinstance(obj, float):
        out.append(0xCB)
        out += _float_bytes(obj)
    elif isinstance(obj, str):
        # Lone surrogates (JSON allows "\ud800") are not UTF-8: replace them.
        data = obj.encode("utf-8", "replace")
        if len(data) < 32:
            out.append(0xA0 | len(data))
        else:
            _pack_size(len(data), out, b"\xd9", b"\xda", b"\xdb")
        out += data
    elif isinstance(obj, bytes | bytearray):
        _pack_size(len(obj), out, b"\xc4", b"\xc5", b"\xc6")
        out += obj
    elif isinstance(obj, list | tuple):
        _pack_len(len(obj), out, 0x90, b"\xdc", b"\xdd")
        for item in obj:
            _pack(item, out)
    elif isinstance(obj, dict):
        _pack_len(len(obj), out, 0x80, b"\xde", b"\xdf")
        for key, value in obj.items():
            _pack(key if isinstance(key, str) else str(key), out)
            _pack(value, out)
    else:
        _pack(str(obj), out)


def _pack_size(n: int, out: bytearray, m8: bytes, m16: bytes, m32: bytes) -> None:
    """A str or bin header: the 8, 16 or 32-bit length form."""
    if n < 0x100:
        out += m8 + n.to_bytes(1, "big")
    elif n < 0x10000:
        out += m16 + n.to_bytes(2, "big")
    else:
        out += m32 + n.to_bytes(4, "big")


def _pack_len(n: int, out: bytearray, fix: int, m16: bytes, m32: bytes) -> None:
    if n < 16:
        out.append(fix | n)
    elif n < 0x10000:
        out += m16 + n.to_bytes(2, "big")
    else:
        out += m32 + n.to_bytes(4, "big")


def _pack_int(n: int, out: bytearray) -> None:
    if 0 <= n < 0x80:
        out.append(n)
    elif -32 <= n < 0:
        out.append(n & 0xFF)
    elif 0 <= n < 2**64:
        out += b"\xcf" + n.to_bytes(8, "big")
    elif -(2**63) <= n < 0:
        out += b"\xd3" + n.to_bytes(8, "big", signed=True)
    else:
        _pack(str(n), out)  # JSON allows integers msgpack cannot carry


def _float_bytes(x: float) -> bytes:
    import struct  # already loaded by the interpreter's start-up in practice

    return struct.pack(">d", x)


def unpack(data: bytes) -> Any:
    value, end = _unpack(data, 0)
    if end != len(data):
        raise WireError("trailing bytes after a msgpack value")
    return value


def _unpack(b: bytes, i: int) -> tuple[Any, int]:  # one branch per format
    t = b[i]
    i += 1
    if t < 0x80:
        return t, i
    if t >= 0xE0:
        return t - 0x100, i
    if 0xA0 <= t <= 0xBF:
        return _str(b, i, t & 0x1F)
    if 0x90 <= t <= 0x9F:
        return _array(b, i, t & 0x0F)
    if 0x80 <= t <= 0x8F:
        return _map(b, i, t & 0x0F)
    if t == 0xC0:
        return None, i
    if t == 0xC2:
        return False, i
    if t == 0xC3:
        return True, i
    if 0xCC <= t <= 0xCF:  # uint 8/16/32/64
        size = 1 << (t - 0xCC)
        return int.from_bytes(b[i : i + size], "big"), i + size
    if 0xD0 <= t <= 0xD3:  # int 8/16/32/64
        size = 1 << (t - 0xD0)
        return int.from_bytes(b[i : i + size], "big", signed=True), i + size
    if t in (0xCA, 0xCB):
        import struct

        size = 4 if t == 0xCA else 8
        return struct.unpack(">f" if size == 4 else ">d", b[i : i + size])[0], i + size
    if t in (0xD9, 0xDA, 0xDB):
        size = 1 << (t - 0xD9)
        return _str(b, i + size, int.from_bytes(b[i : i + size], "big"))
    if t in (0xC4, 0xC5, 0xC6):
        size = 1 << (t - 0xC4)
        n = int.from_bytes(b[i : i + size], "big")
        return bytes(b[i + size : i + size + n]), i + size + n
    if t in (0xDC, 0xDD):
        size = 2 if t == 0xDC else 4
        return _array(b, i + size, int.from_bytes(b[i : i + size], "big"))
    if t in (0xDE, 0xDF):
        size = 2 if t == 0xDE else 4
        return _map(b, i + size, int.from_bytes(b[i : i + size], "big"))
    if 0xD4 <= t <= 0xD8:  # fixext 1/2/4/8/16
        return _ext(b, i + 1, b[i], 1 << (t - 0xD4))
    if t in (0xC7, 0xC8, 0xC9):  # ext 8/16/32
        size = 1 << (t - 0xC7)
        n = int.from_bytes(b[i : i + size], "big")
        return _ext(b, i + size + 1, b[i + size], n)
    raise WireError(f"unknown msgpack type byte 0x{t:02x}")


def _str(b: bytes, i: int, n: int) -> tuple[str, int]:
    return b[i : i + n].decode("utf-8", "replace"), i + n


def _array(b: bytes, i: int, n: int) -> tuple[list[Any], int]:
    items = []
    for _ in range(n):
        item, i = _unpack(b, i)
        items.append(item)
    return items, i


def _map(b: bytes, i: int, n: int) -> tuple[dict[Any, Any], int]:
    d = {}
    for _ in range(n):
        key, i = _unpack(b, i)
        value, i = _unpack(b, i)
        d[key] = value
    return d, i


def _ext(b: bytes, i: int, code: int, n: int) -> tuple[Any, int]:
    data = b[i : i + n]
    if code == 0xFF:  # -1: a timestamp (msgspec's datetimes): seconds since the epoch
        if n == 4:
            return float(int.from_bytes(data, "big")), i + n
        if n == 8:
            v = int.from_bytes(data, "big")
            return (v & 0x3_FFFF_FFFF) + (v >> 34) / 1e9, i + n
        if n == 12:
            nsec = int.from_bytes(data[:4], "big")
            return int.from_bytes(data[4:], "big", signed=True) + nsec / 1e9, i + n
    return bytes(data), i + n


# -- the exchange -------------------------------------------------------------


def exchange(
    socket_path: str,
    requests: Sequence[dict[str, Any]],
    *,
    deadline: float,
    connect_timeout: float = 0.25,
    client: str = "reverie-hook",
) -> dict[int, dict[str, Any]]:
    """Send a hello and ``requests`` (dicts with a "method") pipelined; collect answers.

    Request i gets id i + 1. Returns ``{id: response}`` for every answer that
    arrived before ``deadline`` (a time.monotonic() value); a response is a
    dict with either "result" or "error" ({"code", "message"}). Raises
    WireError if the daemon cannot be reached or the hello is refused.
    """
    frames = [_frame({"method": "hello", "id": 0, "protocol": PROTOCOL_VERSION, "client": client})]
    for n, request in enumerate(requests, 1):
        frames.append(_frame({"method": request["method"], "id": n, **request}))
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError as e:
        raise WireError(f"no socket: {e}") from e
    try:
        sock.settimeout(max(0.001, min(connect_timeout, deadline - time.monotonic())))
        sock.connect(socket_path)
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(b"".join(frames))
        return _collect(sock, len(requests), deadline)
    except OSError as e:  # refused, missing, not a socket, timed out, reset
        raise WireError(f"{socket_path}: {e}") from e
    finally:
        sock.close()


def _frame(request: dict[str, Any]) -> bytes:
    body = pack(request)
    return len(body).to_bytes(4, "big") + body


def _collect(sock: _socket.socket, count: int, deadline: float) -> dict[int, dict[str, Any]]:
    answers: dict[int, dict[str, Any]] = {}
    buf = b""
    while len(answers) < count + 1:  # + the hello
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            data = sock.recv(_RECV)
        except TimeoutError:
            break
        if not data:
            break  # the daemon closed (shutting down, or refused us): keep what came
        buf += data
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + size:
                break
            response = unpack(buf[4 : 4 + size])
            buf = buf[4 + size :]
            if not isinstance(response, dict) or not isinstance(response.get("id"), int):
                raise WireError("the daemon sent a response without an id")
            answers[response["id"]] = response
    hello = answers.pop(0, None)
    if hello is not None and "error" in hello:
        error = hello["error"] or {}
        raise WireError(f"hello refused: {error.get('message', error)}")
    return answers
