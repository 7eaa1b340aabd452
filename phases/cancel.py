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
import time
from collections.abc import Callable

from reverie.errors import ShuttingDown

ROWS = 4096  # rows of a scan between two checks (a check is ~50 ns, a row ~10 us)
# Pacing (the daemon's runs only): a phase's thread works at most PACE_SLICE_S
# of CPU, then sleeps as long as it worked, so it takes at most half a core
# and, above all, gives the GIL back for as long as it held it. Its planning
# and its batches are pure Python: unpaced, a light sleep then REM under
# tests/bench/bench_load.py's 64 clients held the GIL most of the time and
# searches waited (p50 12 -> 80 ms, p99 400 ms). Dreams are background work:
# they take longer (at most twice as long) instead, but only while clients are
# being served (`busy`): alone, a run goes at full speed.
PACE_SLICE_S = 0.01
PACE_MAX_SLEEP_S = 0.1


class Cancelled(ShuttingDown):
    """A phase's planning was stopped (daemon shutdown): nothing was written.

    Crosses the wire as `shutting_down`, the code of the cause.
    """


class Cancel:
    """A flag a worker thread polls: `set()` from any thread, `check()` in the worker."""

    __slots__ = ("_busy", "_event", "_paced", "_worked", "reason")

    def __init__(self, *, pace: bool = False, busy: Callable[[], bool] | None = None) -> None:
        self._event = threading.Event()
        self.reason = "interrupted by shutdown"
        self._paced = pace
        self._busy = busy  # None: always busy (pace whenever paced)
        self._worked: dict[int, float] = {}  # thread id -> its CPU time at its last pause

    def set(self, reason: str = "") -> None:
        if reason and not self._event.is_set():
            self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if set (call between units of work, never inside a write).

        A paced Cancel also pauses here (see `pace`).
        """
        if self._event.is_set():
            raise Cancelled(self.reason)
        if self._paced:
            self.pace()

    def check_now(self) -> None:
        """`check()` without the pause: for checks inside a write transaction."""
        if self._event.is_set():
            raise Cancelled(self.reason)

    def pause(self, worked_s: float) -> None:
        """Sleep `worked_s` (at most PACE_MAX_SLEEP_S): work done by another thread for us."""
        if self._paced and worked_s > 0 and self._serving():
            self._event.wait(min(worked_s, PACE_MAX_SLEEP_S))  # a cancel ends the pause

    def pace(self) -> None:
        """Sleep as long as this thread worked since its last pause, once that is PACE_SLICE_S.

        CPU time of the calling thread (time.thread_time), so that waiting for
        the GIL or a core does not count as work. No-op unless paced.
        """
        if not self._paced:
            return
        me = threading.get_ident()
        now = time.thread_time()
        last = self._worked.setdefault(me, now)
        if now - last >= PACE_SLICE_S:
            if self._serving():
                self._event.wait(min(now - last, PACE_MAX_SLEEP_S))  # a cancel ends the pause
            self._worked[me] = time.thread_time()
            self.check_now()

    def _serving(self) -> bool:
        return self._busy is None or self._busy()

    def every(self, i: int, n: int = ROWS) -> None:
        """`check()` on every n-th i (a loop's counter): for scans over rows."""
        if i % n == 0:
            self.check()


# A Cancel never set: the default of the plan functions (tests, benchmarks, tools).
NEVER = Cancel()
