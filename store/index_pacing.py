"""The vector indexer's pacing while clients are being served (load, issue 7)."""

from __future__ import annotations

import time
from collections.abc import Callable

# Pacing (load, issue 7): while clients are being served, following writes is
# background work. Indexing an observation costs ~0.35 ms (embedding under the
# GIL, two graph insertions on a core and under the index's write lock); at
# 1,300 events/s that held the daemon long enough that a 64-client load's
# write p99 went from 16 to 40 ms and search p99 from 22 to 50 ms. So after
# each step (an embedded chunk, PACED_ADD insertions) the indexer sleeps as
# long as the step took (CPU time, at most PACE_MAX_SLEEP_S): at most half the
# GIL and a core, and vectors lag more while clients are busy (lexical search
# sees every write at once).
#
# An insertion holds the index's exclusive lock, so a search's vector side
# waits for the whole add call: at 100k vectors an insertion costs ~0.6 ms of
# CPU, and an add of 128 held the lock for 75-130 ms (the load's search p99).
# Eight keep each hold near 5 ms, and the searches waiting go in between.
PACED_ADD = 8
PACE_MAX_SLEEP_S = 0.05
PACE_RATIO = 1.0  # sleep this many times the step's CPU time
#
# Then the next step waits for a moment when no request is being handled
# (at most QUIET_WAIT_S): a step that starts in such a gap competes with no
# request for the cores, the GIL or the index's lock, and one that arrives
# meanwhile waits for a step (~1 ms), not for the catch-up. Bounded, so the
# index keeps up whatever the load: a step of 8 insertions at least every
# ~13 ms is ~600 a second. Under 64 clients (bench_load.py) the daemon is
# idle between requests ~7 ms at a time.
QUIET_WAIT_S = 0.01


def pace(
    busy: Callable[[], bool] | None,
    worked_s: float,
    quiet: Callable[[float], bool] | None = None,
) -> None:
    """Sleep as long as the step just done took (PACE_RATIO times, at most
    PACE_MAX_SLEEP_S) while clients are being served, then wait (at most
    QUIET_WAIT_S) for `quiet`: no request being handled. Otherwise only hand
    the GIL over (see PACED_ADD)."""
    if worked_s > 0 and busy is not None and busy():
        time.sleep(min(PACE_RATIO * worked_s, PACE_MAX_SLEEP_S))
        if quiet is not None:
            quiet(QUIET_WAIT_S)
    else:
        time.sleep(0)
