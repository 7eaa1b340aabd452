"""Document embeddings from a process of its own, for the vector indexer.

    python -m reverie.store.embed_worker FD DIM    (started by RemoteEmbedder)

The lexical embedder is pure Python per token: following 1,300 new
observations a second it held the daemon's GIL for a fifth of a core, which
the requests waited on (a 64-client load: write p99 ~25 ms with it, ~16 ms
with indexing deferred). Embedding a document needs nothing but its text,
so the indexer's thread sends the texts here and waits, GIL released, for
the vectors: the same function, bit for bit (tests/test_embed_worker.py).
Only the lexical embedder is sent out: minilm computes in torch with the GIL
released already, and http waits on its server.

Protocol (rpc/framing.py frames over the socket given as FD): a msgpack
list of texts in, the float32 matrix's raw bytes (len(texts) x DIM) out. The
worker exits when the daemon closes its end or dies (EOF).
"""

from __future__ import annotations

import logging
import socket
import sys
import time

import msgspec
import numpy as np
import numpy.typing as npt
from reverie.daemon.socket_child import child_main, spawn
from reverie.rpc.framing import DEFAULT_MAX_FRAME, FrameBuffer, encode_frame

log = logging.getLogger("reverie.embed_worker")

TIMEOUT_S = 60.0  # one batch (1,024 texts take ~0.2 s): longer means stuck
RETRY_AFTER_S = 30.0  # after a failure, embed in-process this long before trying again

_texts = msgspec.msgpack.Decoder(list[str])
_encoder = msgspec.msgpack.Encoder()


class RemoteEmbedder:
    """`embed(texts)` through a child process, falling back to `local` on any failure.

    Blocking, and for one thread (the indexer's): one request at a time.
    """

    def __init__(self, local: object, dim: int, *, command: list[str] | None = None) -> None:
        self.local = local  # a LexicalEmbedder: the fallback, and what the child runs
        self.dim = dim
        self.command = command or [sys.executable, "-m", "reverie.store.embed_worker"]
        self._sock: socket.socket | None = None
        self._proc: object = None
        self._frames = FrameBuffer(DEFAULT_MAX_FRAME)
        self._failed_at = 0.0
        self.remote_batches = 0  # for tests and figures
        self.failures = 0

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        if texts and time.monotonic() - self._failed_at >= RETRY_AFTER_S:
            try:
                return self._remote(texts)
            except (OSError, ValueError) as e:
                self.failures += 1
                self._failed_at = time.monotonic()
                log.warning("embed_worker_failed error=%s (embedding in-process)", e)
                self.close()
        return self.local.embed(texts)  # type: ignore[attr-defined, no-any-return]

    def _remote(self, texts: list[str]) -> npt.NDArray[np.float32]:
        sock = self._sock or self._start()
        sock.sendall(encode_frame(_encoder.encode(texts)))
        body = self._receive(sock)
        want = len(texts) * self.dim * 4
        if len(body) != want:
            raise ValueError(f"embed worker answered {len(body)} bytes, not {want}")
        self.remote_batches += 1
        return np.frombuffer(body, dtype=np.float32).reshape(len(texts), self.dim).copy()

    def _start(self) -> socket.socket:
        self._proc, sock = spawn(self.command, str(self.dim))
        sock.settimeout(TIMEOUT_S)
        self._sock = sock
        self._frames = FrameBuffer(DEFAULT_MAX_FRAME)
        return sock

    def _receive(self, sock: socket.socket) -> bytes:
        while True:
            for body in self._frames.frames():
                return body
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionResetError("the embed worker closed its socket")
            self._frames.feed(data)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        proc = self._proc
        if proc is not None:
            proc.kill()  # type: ignore[attr-defined]
            proc.wait()  # type: ignore[attr-defined]
            self._proc = None

    @property
    def pid(self) -> int | None:
        return getattr(self._proc, "pid", None)


def serve(sock: socket.socket, dim: int) -> int:
    from reverie.store.embed_lexical import LexicalEmbedder

    embedder = LexicalEmbedder(dim)
    frames = FrameBuffer(DEFAULT_MAX_FRAME)
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return 0  # the daemon closed its end, or is gone
        frames.feed(data)
        for body in frames.frames():
            rows = embedder.embed(_texts.decode(body))
            sock.sendall(encode_frame(np.ascontiguousarray(rows, dtype=np.float32).tobytes()))


def main(argv: list[str]) -> int:
    return child_main(
        argv,
        name="embed_worker",
        usage="python -m reverie.store.embed_worker FD DIM",
        serve=lambda sock, rest: serve(sock, int(rest[0])),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
