"""The spool: where a hook leaves events when the daemon cannot take them.

A hook must never block or fail its agent, and must never lose an event. If
the daemon is down (or the socket missing, or busy), the hook calls
:func:`append`, which writes the events durably to a new file in the spool
directory; the daemon drains the directory on start and on a timer
(daemon/spool_drain.py), posting each file's events through the same store
path as `post_events`. Events are idempotent by key, so a file drained twice
(a crash between commit and delete) stores nothing twice.

Files are JSON Lines, one :class:`~reverie.rpc.proto_events.Event` per line,
named ``<time_ns>-<pid>-<random>.jsonl`` so that a listing sorts them in the
order they were written. Each is written under a hidden temporary name,
fsynced, renamed, and the directory fsynced: a reader sees a whole file or
none. Appending to a shared file would need locking between concurrent
hooks; one file per call needs none.

Where: ``$REVERIE_SPOOL_DIR``, else ``[events] spool_dir`` of the config
file, else ``<data_dir>/spool`` with the data dir resolved exactly as the
daemon resolves it (``$REVERIE_DATA_DIR``, the config file, the XDG state
default). The hook and the daemon must agree: a daemon started with
``--data-dir`` needs ``REVERIE_SPOOL_DIR`` (or the config) for its hooks.

Hot path for hooks: the standard library and msgspec only; the config
module is imported only when the directory is not given by the environment.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec
from reverie.rpc.proto_events import Event

if TYPE_CHECKING:
    from reverie.daemon.config import Config

__all__ = [
    "BAD_DIR",
    "SpoolRead",
    "append",
    "dir_for",
    "encode_lines",
    "pending",
    "read",
    "spool_dir",
]

BAD_DIR = "bad"  # files that could not be read, kept for inspection
SUFFIX = ".jsonl"
TEMP_PREFIX = ".tmp-"
# A temporary file older than this was left by a writer that died between
# writing and renaming: its complete lines are drained like any file.
STALE_TEMP_S = 600.0

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def spool_dir() -> Path:
    """The spool directory the daemon drains (see the module's docstring)."""
    if env := os.environ.get("REVERIE_SPOOL_DIR"):
        return Path(env).expanduser()
    from reverie.daemon import config  # the slow path: read the config file
    from reverie.errors import ConfigError

    try:
        cfg = config.load()
    except ConfigError:
        # A broken config stops the daemon too; keep the event where the
        # daemon is most likely to look once the config is fixed.
        cfg = config.Config()
        if data := os.environ.get("REVERIE_DATA_DIR"):
            cfg.daemon.data_dir = data
    return dir_for(cfg)


def dir_for(cfg: Config) -> Path:
    """The spool directory for a loaded config (how the daemon finds its own)."""
    if env := os.environ.get("REVERIE_SPOOL_DIR"):
        return Path(env).expanduser()
    if cfg.events.spool_dir:
        return Path(cfg.events.spool_dir).expanduser()
    return cfg.data_path / "spool"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append(events: Sequence[Event], directory: Path | None = None) -> Path | None:
    """Write the events durably as one new spool file; return its path.

    Events without ``at`` get the current time, so that a drained event
    keeps when it happened. Nothing is written for an empty list. Raises
    OSError if the disk refuses (the caller decides what "never fail" means).
    """
    if not events:
        return None
    directory = spool_dir() if directory is None else directory
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    lines = b"".join(
        _encoder.encode(e if e.at is not None else msgspec.structs.replace(e, at=now)) + b"\n"
        for e in events
    )
    tag = f"{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}"
    tmp = directory / f"{TEMP_PREFIX}{tag}{SUFFIX}"
    final = directory / f"{tag}{SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            _write_all(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return final


class SpoolRead(NamedTuple):
    events: list[Event]
    bad_lines: list[int]  # 1-based numbers of lines that are not an event


def read(path: Path) -> SpoolRead:
    """The events in a spool file; lines that do not decode are skipped and reported."""
    events: list[Event] = []
    bad: list[int] = []
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            events.append(_decoder.decode(line))
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            bad.append(lineno)
    return SpoolRead(events, bad)


def pending(directory: Path, *, now: float | None = None) -> list[Path]:
    """Spool files waiting to be drained, oldest first (stale temporary files included)."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    now = time.time() if now is None else now
    out: list[tuple[str, Path]] = []
    for entry in entries:
        name = entry.name
        if not name.endswith(SUFFIX) or not entry.is_file(follow_symlinks=False):
            continue
        if name.startswith(TEMP_PREFIX):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime < STALE_TEMP_S:
                    continue  # still being written
            except FileNotFoundError:
                continue
            out.append((name.removeprefix(TEMP_PREFIX), Path(entry.path)))
        elif not name.startswith("."):
            out.append((name, Path(entry.path)))
    out.sort()
    return [p for _, p in out]


def encode_lines(events: Iterable[Event]) -> bytes:
    """Events as JSON Lines (the spool's format, also what `reverie post-events` reads)."""
    return b"".join(_encoder.encode(e) + b"\n" for e in events)
