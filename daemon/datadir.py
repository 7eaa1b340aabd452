"""The data directory, and the lock that makes one daemon its only owner."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from reverie.errors import DataDirLocked, ReadOnlyStorage

LOCK_NAME = "daemon.lock"


def prepare(path: Path) -> None:
    """Create the data dir (0700) if needed and check that it is writable."""
    # Everything the daemon writes (database, WAL, index, backups) is for its
    # own uid only, even in a data dir an operator made world-readable: the
    # files must not bypass the socket's SO_PEERCRED check. systemd's units
    # set UMask=0077 too; a daemon started by hand gets the same.
    os.umask(os.umask(0o077) | 0o077)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ReadOnlyStorage(f"cannot create data dir {path}: {e.strerror}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        # faults: say why, since root ignores modes and meets only read-only mounts.
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            raise ReadOnlyStorage(f"data dir {path} is on a read-only file system")
        raise ReadOnlyStorage(f"data dir {path} is not writable by uid {os.getuid()}")


class DataDirLock:
    """An exclusive flock on <data_dir>/daemon.lock, held for the daemon's life.

    flock (not a pid file) so that the kernel frees it when the process dies,
    however it dies: a SIGKILLed daemon never blocks its successor.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ReadOnlyStorage(f"cannot open lock file {self.path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"another reverie daemon (pid {holder}) is using {self.path.parent}; "
                "stop it first or choose another data dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
