"""Flushing a large file a window at a time (store/writeback.py) before its fsync.

Real files on the test's file system; what the kernel does with the calls is
not observable here, so these check the windows asked for, that a failing
call only turns the flushing off, and that checksum_and_sync is unchanged.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
from reverie.store import writeback
from reverie.store.durable import checksum_and_sync
from reverie.store.writeback import Writeback

pytestmark = pytest.mark.skipif(
    writeback._sync_file_range is None, reason="no sync_file_range on this platform"
)


def test_windows_are_started_in_order_with_at_most_two_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(os.urandom(5 * 4096))
    fd = os.open(path, os.O_RDONLY)
    try:
        wb = Writeback(fd, window=4096)
        wb.advance(4095)  # not a whole window yet
        assert (wb.started, wb.waited) == (0, 0)
        wb.advance(4096)
        assert (wb.started, wb.waited) == (4096, 0)
        wb.advance(3 * 4096 + 10)  # two more windows: the older ones are waited for
        assert (wb.started, wb.waited) == (3 * 4096, 2 * 4096)
        assert wb.enabled
    finally:
        os.close(fd)


def test_a_descriptor_it_cannot_flush_turns_it_off(tmp_path: Path) -> None:
    r, w = os.pipe()  # sync_file_range on a pipe: ESPIPE
    try:
        wb = Writeback(r, window=4096)
        wb.advance(3 * 4096)
        assert not wb.enabled and wb.started == 4096  # one attempt, then the fsync does it
        wb.advance(10 * 4096)
        assert wb.started == 4096
    finally:
        os.close(r)
        os.close(w)


def test_checksum_and_sync_of_a_file_many_windows_long(tmp_path: Path) -> None:
    data = os.urandom(3 * writeback.WINDOW + 12345)
    path = tmp_path / "index.bin"
    path.write_bytes(data)
    assert checksum_and_sync(path) == (len(data), zlib.crc32(data))
