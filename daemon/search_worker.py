"""A search worker process: the SQLite half of searches, outside the daemon's GIL.

    python -m reverie.daemon.search_worker FD DB_PATH   (started by daemon/search_workers.py)

A search spends most of its time in Python (ranking, fusion, rows to
structs) and SQLite. In the daemon those hold one GIL with everything else
it does (commits, indexing, dreams): under load a search waited there far
longer than it ran. The daemon keeps what needs its memory (the query's
vector neighbours from the HNSW index, store/hybrid.py vector_side()) and
sends the rest (hybrid.lexical_side() and combine()) here, to a process with its own read-only
connection and its own GIL.

The protocol is the wire protocol's framing (rpc/framing.py) over the
socket given as FD: one `Ready` when the database is open, then per search
a `StartSearch` (the worker starts the lexical side at once), a
`VectorSide` (sent when the daemon has the neighbours: the two sides run at
the same time), and one answer, `Finished` or `Failed`. The worker exits
when the daemon closes its end (or dies: the read ends with EOF).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import apsw
import msgspec
from msgspec import Struct
from reverie.daemon.config import SearchConfig
from reverie.daemon.socket_child import child_main
from reverie.errors import ReverieError
from reverie.rpc.framing import DEFAULT_MAX_FRAME, FrameBuffer, encode_frame
from reverie.rpc.protocol import Hit, Search

log = logging.getLogger("reverie.search_worker")


class StartSearch(Struct, tag=True, array_like=True):
    """Daemon -> worker: begin this search (its lexical side needs nothing else)."""

    req: Search
    cfg: SearchConfig


class VectorSide(Struct, tag=True, array_like=True):
    """Daemon -> worker, after StartSearch: the vector side's result (None: lexical
    only); `abort`: the vector side failed, answer Failed without finishing."""

    vec: list[tuple[int, float]] | None
    notes: list[str]
    abort: bool = False


class Ready(Struct, tag=True, array_like=True):
    """Worker -> daemon, once: the database is open."""

    pid: int


class Finished(Struct, tag=True, array_like=True):
    hits: list[Hit]
    mode: str
    notes: list[str]


class Failed(Struct, tag=True, array_like=True):
    """The search raised: the daemon answers the client with this error."""

    code: str
    message: str


Request = StartSearch | VectorSide
Answer = Ready | Finished | Failed

_encoder = msgspec.msgpack.Encoder()
_requests = msgspec.msgpack.Decoder(Request)


class _Protocol(Exception):
    """The daemon sent something out of step: the worker exits (it is replaced)."""


def serve(sock: socket.socket, db_path: Path) -> int:
    # Imported here (the daemon imports this module for the messages only),
    # and before Ready: imported at the first search, they cost it ~250 ms.
    from reverie.store import hybrid
    from reverie.store.connection import open_connection

    conn = open_connection(db_path, readonly=True)
    sock.sendall(encode_frame(_encoder.encode(Ready(pid=os.getpid()))))
    frames = _frames(sock)
    for msg in frames:
        if not isinstance(msg, StartSearch):
            raise _Protocol(f"expected StartSearch, got {type(msg).__name__}")
        answer = _search(hybrid, conn, msg, frames)
        sock.sendall(encode_frame(_encoder.encode(answer)))
    return 0


def _frames(sock: socket.socket) -> Iterator[Request]:
    """The daemon's messages, until it closes its end (or dies: EOF too)."""
    buf = FrameBuffer(DEFAULT_MAX_FRAME)
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return
        buf.feed(data)
        for body in buf.frames():
            yield _requests.decode(body)


def _search(
    hybrid: ModuleType, conn: apsw.Connection, start: StartSearch, frames: Iterator[Request]
) -> Answer:
    lex: dict[int, float] | None = None
    failed: Failed | None = None
    try:
        lex = hybrid.lexical_side(conn, start.req, cfg=start.cfg)
    except Exception as e:  # answered after the vector side is read: stay in step
        failed = _failed(e)
    side = next(frames, None)
    if side is None:
        raise _Protocol("the daemon closed before the vector side")
    if not isinstance(side, VectorSide):
        raise _Protocol(f"expected VectorSide, got {type(side).__name__}")
    if side.abort:
        return Failed(code="aborted", message="the vector side failed")
    if failed is not None:
        return failed
    try:
        out = hybrid.combine(
            conn, start.req, cfg=start.cfg, lex=lex, vec=side.vec, notes=side.notes
        )
    except Exception as e:
        return _failed(e)
    return Finished(hits=out.hits, mode=out.mode, notes=out.notes)


def _failed(e: Exception) -> Failed:
    from reverie.store.connection import map_error

    if isinstance(e, apsw.Error):
        err = map_error(e, "read failed")  # as the daemon's own readers do
        return Failed(code=err.code, message=err.message)
    if isinstance(e, ReverieError):
        return Failed(code=e.code, message=e.message)
    log.exception("search failed")  # a bug: answered, logged, and the worker goes on
    return Failed(code="internal", message=f"search failed: {type(e).__name__}")


def main(argv: list[str]) -> int:
    return child_main(
        argv,
        name="search_worker",
        usage="python -m reverie.daemon.search_worker FD DB_PATH",
        serve=_serve_or_exit,
    )


def _serve_or_exit(sock: socket.socket, rest: list[str]) -> int:
    try:
        return serve(sock, Path(rest[0]))
    except _Protocol as e:
        log.error("out of step with the daemon: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
