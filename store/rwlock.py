"""A readers-writer lock for threads: many readers at once, or one writer.

hnswlib lets any number of searches run at once but not a search and an
insertion (an insertion rewires neighbour lists that a search is walking).
Searches are short and frequent, writes are short and rare, so:

- readers share the lock; a writer waits until they have all left;
- a writer that is waiting holds off *new* readers, so a steady stream of
  searches cannot starve it (writer preference). Readers that were admitted
  keep running; the wait a writer causes is bounded by the longest search.
- when a writer leaves, the readers that were waiting for it go first (their
  turn), before any writer, the same one included. Without that, a writer that
  takes the lock again and again (the indexer inserts a catch-up batch in
  chunks, one hold each) would win every time: the woken readers had yet to
  get the GIL to see the lock free, and searches stalled for the whole batch
  (1-2 s under bench_load.py's 64 clients). So readers and writers alternate.

The lock is not reentrant: a thread that holds it must not ask for it again
(a reader asking again while a writer waits would deadlock). It is built on
one `threading.Condition`, so it works from any thread, including trio's
worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RWLock"]


class RWLock:
    """Shared (`read`) and exclusive (`write`) holds, as context managers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._readers_turn = False  # a writer left while readers waited: they go first

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._readers_waiting += 1
            try:
                while self._writing or (self._writers_waiting and not self._readers_turn):
                    self._cond.wait()
            finally:
                self._readers_waiting -= 1
                if self._readers_turn and not self._readers_waiting:
                    self._readers_turn = False  # all of them are in: writers may go again
                    self._cond.notify_all()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers or self._readers_turn:
                    self._cond.wait()
            except BaseException:
                # Interrupted while waiting: readers held off for us may go.
                self._writers_waiting -= 1
                self._cond.notify_all()
                raise
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                if self._readers_waiting:
                    self._readers_turn = True
                self._cond.notify_all()

    @property
    def readers(self) -> int:
        """Readers holding the lock now (for tests and status; racy by nature)."""
        return self._readers

    @property
    def writing(self) -> bool:
        return self._writing

    @property
    def writers_waiting(self) -> int:
        return self._writers_waiting

    @property
    def readers_waiting(self) -> int:
        return self._readers_waiting
