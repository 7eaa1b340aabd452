"""The blocking client used by the CLI and the hooks.

It is on the hooks' hot path, so it imports only the standard library,
msgspec and reverie's protocol modules: no trio, no APSW, no numpy.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import msgspec
from reverie.errors import (
    AccessDenied,
    ConnectionLost,
    DaemonNotRunning,
    ProtocolError,
    ReverieError,
    Timeout,
    error_for_code,
)
from reverie.rpc.framing import DEFAULT_MAX_FRAME, FrameBuffer, encode_frame
from reverie.rpc.protocol import (
    PROTOCOL_VERSION,
    RESULT_TYPES,
    Export,
    ExportResult,
    Forget,
    ForgetResult,
    Get,
    Hello,
    HelloResult,
    Import,
    ImportResult,
    Memory,
    MemoryRecord,
    Ping,
    Pong,
    RawResponse,
    Remember,
    RememberResult,
    Search,
    SearchResult,
    Status,
    StatusResult,
    _Request,
)

T = TypeVar("T")
_RECV_SIZE = 65536


def resolve_socket(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--socket, else REVERIE_SOCKET, else the config file's, else the default."""
    if explicit:
        return Path(explicit).expanduser()
    if env := os.environ.get("REVERIE_SOCKET"):
        return Path(env).expanduser()
    from reverie.daemon import config

    return config.load().socket_path


class Client:
    """A connection to the daemon. Use as a context manager, or call close()."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = 30.0,
        name: str = "reverie-client",
    ) -> None:
        self.socket_path = resolve_socket(socket_path)
        self.timeout = timeout
        self.name = name
        self.server: HelloResult | None = None
        self._sock: socket.socket | None = None
        self._buf = FrameBuffer(DEFAULT_MAX_FRAME)
        self._next_id = 1
        self._early: dict[int, RawResponse] = {}
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(RawResponse)

    # -- connection -----------------------------------------------------------

    def connect(self) -> Client:
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            raise DaemonNotRunning(
                f"the reverie daemon is not running (nothing listens on {self.socket_path}); "
                "start it with `reverie daemon` (or `systemctl --user start reverie`)"
            ) from e
        except PermissionError as e:
            sock.close()
            raise AccessDenied(f"cannot connect to {self.socket_path}: permission denied") from e
        except TimeoutError as e:
            sock.close()
            raise Timeout(f"connecting to {self.socket_path} timed out") from e
        except OSError as e:
            sock.close()
            raise DaemonNotRunning(f"cannot connect to {self.socket_path}: {e}") from e
        self._sock = sock
        self.server = self._call(Hello(protocol=PROTOCOL_VERSION, client=self.name), HelloResult)
        self._buf = FrameBuffer(self.server.max_frame)
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- calls --------------------------------------------------------------------

    def call(self, request: _Request) -> Any:
        """Send one request and return its typed result (or raise its error)."""
        return self._call(request, RESULT_TYPES[type(request)])

    def call_many(self, requests: Sequence[_Request]) -> list[Any]:
        """Pipeline several requests: send all, then collect every answer.

        Raises the first error after all answers are in.
        """
        self.connect()
        ids = [self._assign(r) for r in requests]
        self._send(b"".join(encode_frame(self._encoder.encode(r)) for r in requests))
        raw = [self._receive(i) for i in ids]
        return [
            self._unwrap(resp, RESULT_TYPES[type(r)]) for resp, r in zip(raw, requests, strict=True)
        ]

    def _call(self, request: _Request, result_type: type[T]) -> T:
        if self._sock is None:
            self.connect()
        rid = self._assign(request)
        self._send(encode_frame(self._encoder.encode(request)))
        return self._unwrap(self._receive(rid), result_type)

    def _assign(self, request: _Request) -> int:
        request.id = self._next_id
        self._next_id += 1
        return request.id

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except TimeoutError as e:
            raise Timeout("sending to the daemon timed out") from e
        except OSError as e:
            refusal = self._refusal()
            self.close()
            if refusal is not None:
                raise refusal from e
            raise ConnectionLost(f"the daemon closed the connection: {e}") from e

    def _refusal(self) -> ReverieError | None:
        """The error the daemon sent before closing on us, if any.

        A daemon that refuses a connection (too many connections, access
        denied, shutting down) answers and closes at once, possibly before our
        first write: the write then fails, but the reason is in the socket.
        """
        assert self._sock is not None
        try:
            self._sock.settimeout(1.0)
            while data := self._sock.recv(_RECV_SIZE):
                self._buf.feed(data)
        except OSError:
            pass
        try:
            for frame in self._buf.frames():
                resp = self._decoder.decode(frame)
                if resp.error is not None:
                    return error_for_code(resp.error.code, resp.error.message, resp.error.data)
        except (msgspec.DecodeError, msgspec.ValidationError, ReverieError):
            pass
        return None

    def _receive(self, rid: int) -> RawResponse:
        if rid in self._early:
            return self._early.pop(rid)
        while True:
            for frame in self._buf.frames():
                try:
                    resp = self._decoder.decode(frame)
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    self.close()
                    raise ProtocolError(f"the daemon sent an undecodable response: {e}") from e
                if resp.id == rid or (resp.id == 0 and resp.error is not None):
                    return resp
                self._early[resp.id] = resp
            assert self._sock is not None
            try:
                data = self._sock.recv(_RECV_SIZE)
            except TimeoutError as e:
                raise Timeout(f"no answer from the daemon within {self.timeout}s") from e
            except OSError as e:
                self.close()
                raise ConnectionLost(f"lost the connection to the daemon: {e}") from e
            if not data:
                self.close()
                raise ConnectionLost("the daemon closed the connection")
            self._buf.feed(data)

    @staticmethod
    def _unwrap(resp: RawResponse, result_type: type[T]) -> T:
        if resp.error is not None:
            raise error_for_code(resp.error.code, resp.error.message, resp.error.data)
        if not resp.result:
            raise ProtocolError("the daemon sent a response with neither result nor error")
        try:
            return msgspec.msgpack.decode(resp.result, type=result_type)
        except msgspec.ValidationError as e:
            raise ProtocolError(f"the daemon's result does not match the protocol: {e}") from e

    # -- typed helpers ---------------------------------------------------------------

    def ping(self) -> Pong:
        return self._call(Ping(), Pong)

    def status(self) -> StatusResult:
        return self._call(Status(), StatusResult)

    def remember(self, content: str, **fields: Any) -> RememberResult:
        return self._call(Remember(content=content, **fields), RememberResult)

    def get(self, memory_id: int) -> Memory:
        return self._call(Get(memory_id=memory_id), Memory)

    def forget(self, memory_id: int, *, purge: bool = False, reason: str = "") -> ForgetResult:
        return self._call(Forget(memory_id=memory_id, purge=purge, reason=reason), ForgetResult)

    def search(
        self, query: str, *, workspace: str | None = None, limit: int = 10, **filters: Any
    ) -> SearchResult:
        """Search; `filters` are Search's other fields (mode, kinds, tags, since, ...)."""
        return self._call(
            Search(query=query, workspace=workspace, limit=limit, **filters), SearchResult
        )

    def export(
        self, *, workspace: str | None = None, include_forgotten: bool = False, page: int = 500
    ) -> Iterator[MemoryRecord]:
        """Every memory, page by page, in id order."""
        after = 0
        while True:
            res = self._call(
                Export(
                    workspace=workspace,
                    after_id=after,
                    limit=page,
                    include_forgotten=include_forgotten,
                ),
                ExportResult,
            )
            yield from res.records
            if res.next_after_id is None:
                return
            after = res.next_after_id

    def import_records(self, records: Iterable[MemoryRecord], *, batch: int = 500) -> ImportResult:
        added = skipped = 0
        chunk: list[MemoryRecord] = []
        for rec in records:
            chunk.append(rec)
            if len(chunk) >= batch:
                r = self._call(Import(records=chunk), ImportResult)
                added, skipped, chunk = added + r.added, skipped + r.skipped, []
        if chunk:
            r = self._call(Import(records=chunk), ImportResult)
            added, skipped = added + r.added, skipped + r.skipped
        return ImportResult(added=added, skipped=skipped)
