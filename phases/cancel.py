"""Cooperative cancellation of a phase's planning (and its LLM step) in a worker thread.

A plan runs in a worker thread for seconds to a minute (REM's blocked
cosine at 100k memories); trio cannot interrupt a thread, and waiting for it
outlasts the daemon's grace period (systemd would SIGKILL). So the plan
functions take a `Cancel` and call `check()` between units of work (a block
of the exact search, a batch of index queries, every `ROWS` rows of a
scan): cheap (one Event read), and a cancelled plan raises `Cancelled` at the
next check, having written nothing (planning only reads).

The daemon sets every live run's Cancel when shutdown begins
(`Dreams.shutdown`), and a run's own Cancel is set when trio cancels the
task waiting on the thread (service.py's `in_thread`), so the thread stops
soon after and returns its reader connection before the database closes.
"""

from __future__ import annotations

import threading

from reverie.errors import ShuttingDown

ROWS = 4096  # rows of a scan between two checks (a check is ~50 ns, a row ~10 us)


class Cancelled(ShuttingDown):
    """A phase's planning was stopped (daemon shutdown): nothing was written.

    Crosses the wire as `shutting_down`, the code of the cause.
    """


class Cancel:
    """A flag a worker thread polls: `set()` from any thread, `check()` in the worker."""

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "interrupted by shutdown"

    def set(self, reason: str = "") -> None:
        if reason and not self._event.is_set():
            self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if set (call between units of work, never inside a write)."""
        if self._event.is_set():
            raise Cancelled(self.reason)

    def every(self, i: int, n: int = ROWS) -> None:
        """`check()` on every n-th i (a loop's counter): for scans over rows."""
        if i % n == 0:
            self.check()


# A Cancel never set: the default of the plan functions (tests, benchmarks, tools).
NEVER = Cancel()
