"""reverie's exceptions, grouped by cause (in the manner of httpx).

Every error that crosses the wire carries a stable string ``code``; the client
turns a code back into the same class, so callers catch one hierarchy whether
the failure happened locally or inside the daemon.

    ReverieError
    ├── UsageError            the caller asked for something invalid
    │   ├── InvalidParams     a request's fields do not validate
    │   ├── UnknownMethod     no such RPC method
    │   ├── NotFound          no such memory (or other object)
    │   ├── Conflict          the object changed meanwhile (e.g. an expected version)
    │   └── ConfigError       the configuration file or environment is wrong
    ├── ProtocolError         the bytes on the wire are wrong
    │   ├── MalformedFrame    the body is not msgpack / not a request
    │   ├── FrameTooLarge     the length prefix exceeds the maximum
    │   ├── HelloRequired     a request came before the hello
    │   └── VersionMismatch   client and daemon speak different protocols
    ├── TransportError        the client cannot talk to the daemon
    │   ├── DaemonNotRunning  no socket, or nobody listening on it
    │   ├── ConnectionLost    the daemon closed the connection mid-call
    │   └── Timeout           no answer in time
    ├── AccessDenied          the peer's uid is not allowed
    ├── Unavailable           the daemon cannot serve this now
    │   ├── TooManyConnections
    │   └── ShuttingDown
    └── StorageError          the database refused
        ├── StorageFull       disk or database size limit reached
        ├── ReadOnlyStorage   the data dir or database is read-only
        ├── NotReverieDatabase  a foreign or corrupt file where the db should be
        ├── SchemaTooNew      the database was written by a newer reverie
        ├── CorruptIndex      the saved vector index cannot be used: rebuild it
        └── DataDirLocked     another daemon owns the data dir
    InternalError             a bug: the daemon logged a traceback
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "AccessDenied",
    "ConfigError",
    "Conflict",
    "ConnectionLost",
    "CorruptIndex",
    "DaemonNotRunning",
    "DataDirLocked",
    "FrameTooLarge",
    "HelloRequired",
    "InternalError",
    "InvalidParams",
    "MalformedFrame",
    "NotFound",
    "NotReverieDatabase",
    "ProtocolError",
    "ReadOnlyStorage",
    "ReverieError",
    "SchemaTooNew",
    "ShuttingDown",
    "StorageError",
    "StorageFull",
    "Timeout",
    "TooManyConnections",
    "TransportError",
    "Unavailable",
    "UnknownMethod",
    "UsageError",
    "VersionMismatch",
    "error_for_code",
]


class ReverieError(Exception):
    """Base of every error reverie raises on purpose."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class UsageError(ReverieError):
    code = "usage"


class InvalidParams(UsageError):
    code = "invalid_params"


class UnknownMethod(UsageError):
    code = "unknown_method"


class NotFound(UsageError):
    code = "not_found"


class Conflict(UsageError):
    code = "conflict"


class LockLost(Conflict):
    """A dream phase's lease expired or was taken over while it ran: it stopped."""

    code = "lock_lost"


class ConfigError(UsageError):
    code = "config"


class ProtocolError(ReverieError):
    code = "protocol"


class MalformedFrame(ProtocolError):
    code = "malformed"


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"


class HelloRequired(ProtocolError):
    code = "hello_required"


class VersionMismatch(ProtocolError):
    code = "version_mismatch"


class TransportError(ReverieError):
    code = "transport"


class DaemonNotRunning(TransportError):
    code = "daemon_not_running"


class ConnectionLost(TransportError):
    code = "connection_lost"


class Timeout(TransportError):
    code = "timeout"


class AccessDenied(ReverieError):
    code = "access_denied"


class Unavailable(ReverieError):
    code = "unavailable"


class TooManyConnections(Unavailable):
    code = "too_many_connections"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class StorageError(ReverieError):
    code = "storage"


class StorageFull(StorageError):
    code = "storage_full"


class ReadOnlyStorage(StorageError):
    code = "read_only"


class NotReverieDatabase(StorageError):
    code = "not_reverie_database"


class SchemaTooNew(StorageError):
    code = "schema_too_new"


class CorruptIndex(StorageError):
    """The saved index cannot be used; rebuild it from SQLite.

    ``reason`` (also ``data["reason"]``) says why: ``missing`` (nothing saved
    yet), ``corrupt`` (truncated, garbled or failing its checksum),
    ``mismatch`` (another embedding model or dimension) or ``unsupported``
    (a newer format).
    """

    # The signature accepts `data=` so that errors.error_for_code can rebuild it.
    code = "corrupt_index"

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        reason: str = "corrupt",
        data: dict[str, Any] | None = None,
    ) -> None:
        if data is None:
            data = {"reason": reason, "path": None if path is None else str(path)}
        super().__init__(message, data=data)
        self.reason: str = data.get("reason", reason)


class DataDirLocked(StorageError):
    code = "data_dir_locked"


class InternalError(ReverieError):
    code = "internal"


def _all_subclasses(cls: type[ReverieError]) -> list[type[ReverieError]]:
    out: list[type[ReverieError]] = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE: dict[str, type[ReverieError]] = {c.code: c for c in _all_subclasses(ReverieError)}
_BY_CODE[InternalError.code] = InternalError


def error_for_code(code: str, message: str, data: dict[str, Any] | None = None) -> ReverieError:
    """Rebuild the exception a daemon reported (unknown codes become ReverieError)."""
    cls = _BY_CODE.get(code, ReverieError)
    err = cls(message, data=data)
    if cls is ReverieError:
        err.code = code  # type: ignore[misc]  # keep the daemon's code visible
    return err
