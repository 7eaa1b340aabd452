"""Length-prefixed framing: a 4-byte big-endian length, then the body.

The parser is sans-I/O so that the trio server and the blocking client share
it: feed bytes in, take complete frames out.
"""

from __future__ import annotations

from collections.abc import Iterator

from reverie.errors import FrameTooLarge

HEADER_SIZE = 4
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


def encode_frame(body: bytes) -> bytes:
    return len(body).to_bytes(HEADER_SIZE, "big") + body


class FrameBuffer:
    """Accumulates received bytes and yields whole frame bodies."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending(self) -> bool:
        """True while part of a frame has arrived but not all of it."""
        return bool(self._buf)

    def frames(self) -> Iterator[bytes]:
        """Yield each complete frame; raise FrameTooLarge on an oversized header.

        The size is checked as soon as the header is in, before the body is
        buffered, so an absurd length prefix costs nothing.
        """
        while len(self._buf) >= HEADER_SIZE:
            size = int.from_bytes(self._buf[:HEADER_SIZE], "big")
            if size > self._max:
                raise FrameTooLarge(
                    f"frame of {size} bytes exceeds the maximum of {self._max}",
                    data={"size": size, "max": self._max},
                )
            end = HEADER_SIZE + size
            if len(self._buf) < end:
                return
            body = bytes(self._buf[HEADER_SIZE:end])
            del self._buf[:end]
            yield body
