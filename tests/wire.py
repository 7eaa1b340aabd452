"""Raw protocol bytes, for tests that speak to the daemon without the client."""

from __future__ import annotations

from typing import Any

import msgspec
from reverie.rpc.framing import encode_frame
from reverie.rpc.protocol import PROTOCOL_VERSION, Hello, RawResponse

_encoder = msgspec.msgpack.Encoder()
_response = msgspec.msgpack.Decoder(RawResponse)


def frame(body: bytes) -> bytes:
    return encode_frame(body)


def packed(obj: Any) -> bytes:
    """One frame holding `obj` as msgpack."""
    return encode_frame(_encoder.encode(obj))


def parse_replies(data: bytes) -> list[RawResponse]:
    """Every response frame in `data`; a partial frame fails the test."""
    replies, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 4, f"the daemon sent a partial header: {data[pos:]!r}"
        size = int.from_bytes(data[pos : pos + 4], "big")
        body = data[pos + 4 : pos + 4 + size]
        assert len(body) == size, "the daemon sent a truncated frame"
        replies.append(_response.decode(body))
        pos += 4 + size
    return replies


HELLO = packed(Hello(id=1, protocol=PROTOCOL_VERSION, client="tests"))
