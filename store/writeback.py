"""Flushing a large file to the disk a window at a time (Linux `sync_file_range`).

One fsync of a file of hundreds of MB (the vector index, written by a
forked child) hands the disk all of it at once, and every commit's fsync of
the WAL then waits behind that queue: under 64 clients the index save was
a 60-100 ms stall for writes and searches (tests/bench/bench_load.py, p99
per tenth of the run). Flushed WINDOW bytes at a time, with at most two
windows in flight, a commit waits behind a window at most. The final fsync
still follows (it makes the data durable and flushes the metadata); this
only decides how the data gets there. Where the call is missing (not
Linux, no libc), `advance` does nothing and the fsync does it all.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable

WINDOW = 8 << 20
# <fcntl.h>
_WAIT_BEFORE = 1
_WRITE = 2
_WAIT_AFTER = 4

_SyncFileRange = Callable[[int, int, int, int], int]


def _load() -> _SyncFileRange | None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return fn
    return None


_sync_file_range = _load()


class Writeback:
    """Call `advance(n)` as the first n bytes of `fd` are known to be written."""

    def __init__(self, fd: int, window: int = WINDOW) -> None:
        self.fd = fd
        self.window = window
        self.started = 0  # writeback started for [0, started)
        self.waited = 0  # and finished for [0, waited)
        self.enabled = _sync_file_range is not None

    def advance(self, upto: int) -> None:
        while self.enabled and upto - self.started >= self.window:
            self._call(self.started, self.window, _WRITE)  # start this window
            self.started += self.window
            if self.started - self.waited > self.window:  # two in flight: wait for the older
                self._call(self.waited, self.window, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
                self.waited += self.window

    def _call(self, offset: int, length: int, flags: int) -> None:
        assert _sync_file_range is not None
        if _sync_file_range(self.fd, offset, length, flags) != 0:
            # EINVAL on a file system without it, ESPIPE...: leave it to the fsync.
            self.enabled = False
