"""Writing files so that a crash leaves either the old or the new version.

The recipe is the classic one: write a temporary file in the *same*
directory (a rename is only atomic within one file system), fsync it, rename
it over the final name, then fsync the directory so that the rename itself
is on disk. Readers either see the old file or the complete new one.
"""

from __future__ import annotations

import errno
import os
import secrets
import zlib
from collections.abc import Callable
from pathlib import Path

from reverie.errors import ReadOnlyStorage, StorageError, StorageFull
from reverie.store.writeback import Writeback

__all__ = [
    "checksum_and_sync",
    "create_private",
    "file_checksum",
    "fsync_dir",
    "publish",
    "storage_error",
    "temp_path",
    "write_atomic",
]

_CHUNK = 4 << 20
TEMP_SUFFIX = ".tmp"


def storage_error(e: OSError, context: str) -> StorageError:
    """Map an OS error to reverie's StorageError family."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{context}: no space left on device")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ReadOnlyStorage(f"{context}: {e.strerror}")
    return StorageError(f"{context}: {e}")


def temp_path(final: Path) -> Path:
    """A fresh hidden name next to `final`; leftovers are recognisable by the suffix."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def create_private(path: Path) -> None:
    """Create an empty file readable only by its owner; fail if it exists."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file someone else wrote (shutil.copyfile, SQLite) to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crc_of_fd(fd: int, on_read: Callable[[int], None] | None = None) -> tuple[int, int]:
    crc = 0
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while n := os.readv(fd, [buf]):
        crc = zlib.crc32(view[:n], crc)
        size += n
        if on_read is not None:
            on_read(size)
    return size, crc


def file_checksum(path: Path) -> tuple[int, int]:
    """(size, CRC-32) of a file, read in large chunks."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _crc_of_fd(fd)
    finally:
        os.close(fd)


def checksum_and_sync(path: Path) -> tuple[int, int]:
    """(size, CRC-32) of a file just written by someone else, then fsync it.

    The file is still in the page cache, so reading it back costs little; the
    checksum is of the bytes the kernel will write, not of a buffer we hope
    matches them.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Flushed as it is read, a window at a time (store/writeback.py), so
        # that the fsync does not hand the disk the whole file at once.
        result = _crc_of_fd(fd, Writeback(fd).advance)
        os.fsync(fd)
        return result
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Rename a synced temporary file over `final` and make the rename durable."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_atomic(final: Path, data: bytes) -> None:
    """Replace `final` with `data`, all or nothing, durably."""
    tmp = temp_path(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
