"""The RPC server: accept connections, read frames, answer requests.

The shape follows trio's own server pattern: `serve_listeners` hands each
connection to a task in a connections nursery; each connection has a nursery
of its own in which requests run concurrently (pipelining) while one sender
task writes responses in the order they finish. Shutdown stops accepting,
stops reading, lets in-flight requests finish, and is bounded by the caller's
grace period.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from time import perf_counter  # metrics

import msgspec
import trio
from reverie import __version__
from reverie.daemon.config import DaemonConfig
from reverie.daemon.listen import Access, Peer, peer_credentials
from reverie.daemon.metrics import METRICS  # metrics
from reverie.errors import (
    AccessDenied,
    FrameTooLarge,
    HelloRequired,
    InternalError,
    InvalidParams,
    MalformedFrame,
    ReverieError,
    ShuttingDown,
    TooManyConnections,
    UnknownMethod,
    VersionMismatch,
)
from reverie.rpc.framing import FrameBuffer, encode_frame
from reverie.rpc.proto_backup import Backup
from reverie.rpc.proto_doctor import Doctor
from reverie.rpc.proto_dreams import DreamsRun, DreamsUndo
from reverie.rpc.protocol import (
    METHOD_NAMES,
    PROTOCOL_VERSION,
    Envelope,
    ErrorBody,
    Export,
    Hello,
    HelloResult,
    Import,
    Request,
    Response,
    Result,
)

log = logging.getLogger("reverie.daemon.server")
Handler = Callable[[Request], Awaitable[Result]]
_RECV_SIZE = 65536
# Requests that run for seconds or minutes: they do not hold off the vector
# indexer, which inserts in the gaps between the others (METRICS.wait_quiet).
_LONG: frozenset[type[Request]] = frozenset({Backup, Doctor, DreamsRun, DreamsUndo, Export, Import})
# msgspec raises these besides DecodeError: invalid UTF-8 in a string, and
# nesting deeper than the interpreter's recursion limit.
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_REFUSE_TIMEOUT = 1.0


class Server:
    def __init__(self, cfg: DaemonConfig, handler: Handler, allowed: Access) -> None:
        self.cfg = cfg
        self.handler = handler
        self.allowed = allowed
        self.active = 0
        self.requests = 0
        self.finished = trio.Event()
        self._stopping = False
        self._accept_scope = trio.CancelScope()
        self._connections: set[_Connection] = set()
        self._conns_scope: trio.CancelScope | None = None
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Request] = msgspec.msgpack.Decoder(Request)
        self._envelope = msgspec.msgpack.Decoder(Envelope)

    # -- lifecycle ----------------------------------------------------------

    async def serve(
        self, sock: socket.socket, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        try:
            async with trio.open_nursery() as conns:
                self._conns_scope = conns.cancel_scope
                with self._accept_scope:
                    await trio.serve_listeners(
                        self._handle,
                        [listener],
                        handler_nursery=conns,
                        task_status=task_status,  # type: ignore[arg-type]
                    )
                await listener.aclose()
        finally:
            self.finished.set()

    def begin_shutdown(self) -> None:
        """Stop accepting and reading; requests already read still complete."""
        self._stopping = True
        self._accept_scope.cancel()
        for conn in self._connections:
            conn.stop_reading()

    def force_close(self) -> None:
        """End every connection now (the grace period is over)."""
        if self._conns_scope is not None:
            self._conns_scope.cancel()

    # -- one connection -------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                peer = peer_credentials(stream.socket)  # type: ignore[arg-type]
            except OSError as e:
                log.warning("cannot read peer credentials, closing: %s", e)
                return
            refusal = self._refusal(peer, stream.socket)  # type: ignore[arg-type]
            if refusal is not None:
                log.warning(
                    "refused connection peer_uid=%d peer_pid=%d reason=%s",
                    peer.uid,
                    peer.pid,
                    refusal.code,
                )
                await self._send_error_and_close(stream, refusal)
                return
            self.active += 1
            try:
                await _Connection(self, stream, peer).run()
            except Exception:
                # A bug must cost one connection, never the daemon.
                log.exception("connection failed peer_pid=%d", peer.pid)
            finally:
                self.active -= 1

    def _refusal(self, peer: Peer, sock: socket.socket) -> ReverieError | None:
        if not self.allowed.admits(peer, sock):
            return AccessDenied(f"uid {peer.uid} is not allowed to use this daemon")
        if self._stopping:
            return ShuttingDown("the daemon is shutting down")
        if self.active >= self.cfg.max_connections:
            return TooManyConnections(
                f"too many connections (limit {self.cfg.max_connections}); try again later"
            )
        return None

    async def _send_error_and_close(self, stream: trio.SocketStream, err: ReverieError) -> None:
        with trio.move_on_after(_REFUSE_TIMEOUT):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(self.encode_error(0, err))

    # -- encoding -----------------------------------------------------------------

    def encode_error(self, rid: int, err: ReverieError) -> bytes:
        METRICS.error(err.code)  # metrics: every error answer passes here
        body = ErrorBody(code=err.code, message=err.message, data=err.data)
        return encode_frame(self._encoder.encode(Response(id=rid, error=body)))

    def encode_result(self, rid: int, result: Result) -> bytes:
        body = self._encoder.encode(Response(id=rid, result=result))
        if len(body) > self.cfg.max_frame_bytes:
            return self.encode_error(
                rid,
                FrameTooLarge(
                    f"the result is {len(body)} bytes, over the maximum frame of "
                    f"{self.cfg.max_frame_bytes}; ask for less (e.g. a smaller limit)"
                ),
            )
        return encode_frame(body)

    def decode(self, frame: bytes) -> Request | tuple[int, ReverieError]:
        """The request in a frame, or the id and error to answer it with."""
        try:
            return self._decoder.decode(frame)
        except msgspec.ValidationError as e:
            return self._classify(frame, e)
        except _UNDECODABLE as e:
            return 0, MalformedFrame(f"the frame is not valid msgpack: {e}")

    def _classify(self, frame: bytes, e: msgspec.ValidationError) -> tuple[int, ReverieError]:
        try:
            env = self._envelope.decode(frame)
        except (msgspec.ValidationError, *_UNDECODABLE):
            return 0, MalformedFrame(f"the frame is not a request: {e}")
        rid = env.id if isinstance(env.id, int) and not isinstance(env.id, bool) else 0
        rid = rid if -(2**63) <= rid < 2**63 else 0
        if isinstance(env.method, str) and env.method and env.method not in METHOD_NAMES:
            return rid, UnknownMethod(
                f"unknown method {env.method[:64]!r}", data={"methods": sorted(METHOD_NAMES)}
            )
        return rid, InvalidParams(str(e))


class _Connection:
    """One client: a read loop that answers requests, inline or concurrently.

    A lone request (the usual case: one call at a time) is answered inline,
    which costs no task spawn. Frames that arrive together (pipelining) run
    as concurrent tasks. Responses are written under a FIFO lock, each as it
    is ready, so a slow request never holds back a fast one.
    """

    def __init__(self, server: Server, stream: trio.SocketStream, peer: Peer) -> None:
        self.server = server
        self.stream = stream
        self.peer = peer
        self.cfg = server.cfg
        self.greeted = False
        self.closed = False
        self.in_flight = trio.Semaphore(self.cfg.max_in_flight)
        self.send_lock = trio.StrictFIFOLock()
        self.read_scope: trio.CancelScope | None = None
        # When the frame now partly received must be complete.
        self.frame_deadline = math.inf

    def stop_reading(self) -> None:
        if self.read_scope is not None:
            self.read_scope.cancel()

    async def run(self) -> None:
        self.server._connections.add(self)
        try:
            async with trio.open_nursery() as work:
                await self._read_loop(work)
            # Leaving the nursery waited for every request task to answer.
        finally:
            self.server._connections.discard(self)

    async def _write(self, frame: bytes) -> None:
        if self.closed:
            return
        async with self.send_lock:
            try:
                await self.stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closed = True  # the client is gone; later answers are dropped

    async def _read_loop(self, work: trio.Nursery) -> None:
        buf = FrameBuffer(self.cfg.max_frame_bytes)
        while not self.server._stopping and not self.closed:
            data = await self._receive(buf.pending)
            if not data:
                return
            buf.feed(data)
            frames: list[bytes] = []
            too_large: FrameTooLarge | None = None
            try:
                frames.extend(buf.frames())
            except FrameTooLarge as e:
                too_large = e
            lone = len(frames) == 1 and not buf.pending and too_large is None
            if not buf.pending:
                self.frame_deadline = math.inf
            elif frames or self.frame_deadline == math.inf:  # a new frame has begun
                self.frame_deadline = trio.current_time() + self.cfg.frame_timeout_s
            for frame in frames:
                if not await self._on_frame(frame, work, inline=lone):
                    return
            if too_large is not None:
                # The stream can no longer be parsed: answer and close.
                await self._write(self.server.encode_error(0, too_large))
                return

    async def _receive(self, partial: bool) -> bytes:
        """Bytes from the client, or b"" on EOF, timeout, shutdown or a dead connection."""
        # A fresh scope per read: shutdown cancels reads, never a request.
        if partial:
            self.read_scope = trio.move_on_at(self.frame_deadline)
        else:
            self.read_scope = trio.move_on_after(self.cfg.idle_timeout_s)
        with self.read_scope:
            try:
                return await self.stream.receive_some(_RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
        if not self.server._stopping:
            log.debug(
                "closing connection peer_pid=%d reason=%s",
                self.peer.pid,
                "slow_frame" if partial else "idle",
            )
        return b""

    async def _on_frame(self, frame: bytes, work: trio.Nursery, *, inline: bool) -> bool:
        """Handle one frame; False closes the connection."""
        decoded = self.server.decode(frame)
        if isinstance(decoded, tuple):
            rid, err = decoded
            await self._write(self.server.encode_error(rid, err))
            return True
        if isinstance(decoded, Hello):
            return await self._hello(decoded)
        if not self.greeted:
            err = HelloRequired("send hello (with the protocol version) before any request")
            await self._write(self.server.encode_error(decoded.id, err))
            return True
        if inline:
            await self._answer(decoded)
        else:
            await self.in_flight.acquire()
            work.start_soon(self._answer_released, decoded)
        return True

    async def _hello(self, req: Hello) -> bool:
        if req.protocol != PROTOCOL_VERSION:
            err = VersionMismatch(
                f"client speaks protocol {req.protocol}, this daemon speaks {PROTOCOL_VERSION}",
                data={"server": PROTOCOL_VERSION},
            )
            await self._write(self.server.encode_error(req.id, err))
            return False
        self.greeted = True
        result = HelloResult(
            protocol=PROTOCOL_VERSION,
            server=f"reverie/{__version__}",
            max_frame=self.cfg.max_frame_bytes,
        )
        await self._write(self.server.encode_result(req.id, result))
        return True

    async def _answer_released(self, req: Request) -> None:
        try:
            await self._answer(req)
        finally:
            self.in_flight.release()

    async def _answer(self, req: Request) -> None:
        self.server.requests += 1
        short = type(req) not in _LONG
        METRICS.enter(short)  # metrics, and the indexer's gaps
        began, code = perf_counter(), None
        try:
            result = await self.server.handler(req)
            frame = self.server.encode_result(req.id, result)
        except ReverieError as e:
            code = e.code
            frame = self.server.encode_error(req.id, e)
        except Exception:
            log.exception("request failed method=%s id=%d", type(req).__name__, req.id)
            code = InternalError.code
            frame = self.server.encode_error(
                req.id, InternalError("internal error; the daemon logged the details")
            )
        finally:  # metrics: handling time, before the write (the client's pace)
            METRICS.leave(short)
            METRICS.request(type(req), perf_counter() - began, code)
        await self._write(frame)
