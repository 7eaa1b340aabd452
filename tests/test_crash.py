"""Crash consistency: SIGKILL the daemon at random moments under concurrent load.

The loop lives in tests/crash_driver.py (also runnable alone for long runs).
REVERIE_CRASH_ITERATIONS sets the iterations (default 5, to keep CI fast; the
full run is 50 or more) and REVERIE_CRASH_SEED replays a failing seed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import apsw
import crash_driver
import pytest
from harness import Daemon, record, wait_indexed
from reverie.errors import Conflict, ReverieError
from reverie.rpc.proto_dreams import DreamsRun
from reverie.store.database import DB_FILENAME

# A failing test must not leave its daemon running (conftest.reap_daemons).
pytestmark = pytest.mark.usefixtures("reap_daemons")


def test_sigkill_loop_keeps_every_acknowledged_write(short_tmp: Path) -> None:
    iterations = int(os.environ.get("REVERIE_CRASH_ITERATIONS", "5"))
    seed = int(os.environ.get("REVERIE_CRASH_SEED", str(random.randrange(2**31))))
    print(f"REVERIE_CRASH_SEED={seed}")  # shown with -s, and in the failure report
    totals = crash_driver.run(short_tmp, iterations, seed)
    assert totals.iterations == iterations
    # The loop must have had something to lose, or it proves nothing.
    assert totals.memories_checked >= 10 * iterations, totals.summary()
    assert totals.events_checked >= 10 * iterations, totals.summary()
    assert totals.dream_runs_completed > 0 and totals.vector_lookups > 0, totals.summary()


def test_a_run_killed_holding_the_lock_is_taken_over_after_its_ttl(short_tmp: Path) -> None:
    """SIGKILL exactly while a dream run holds the phase lock with its ledger row
    'running': the next daemon is refused until the TTL ends, then takes the
    lock over and marks the orphaned row failed."""
    ttl = 6.0
    config = f"[index]\nenabled = false\n[dreams]\npreset = 'off'\nlock_ttl_s = {ttl}\n"
    d = Daemon(short_tmp, config=config).start()
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    with d.client() as c:
        c.import_records(
            record(f"old fact {i} about topic {i % 50}", workspace="w", at=old, importance=0.1)
            for i in range(5000)
        )
    db = d.data_dir / DB_FILENAME

    def run() -> None:
        with contextlib.suppress(ReverieError), d.client() as c:
            c.call(DreamsRun(phase="light-sleep"))  # ~0.5 s of ops: killed midway

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 30
    while not _query(db, "SELECT id FROM dream_runs WHERE status = 'running'"):
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.002)
    d.kill()
    t.join(10)
    (run_id,) = _query(db, "SELECT id FROM dream_runs WHERE status = 'running'")[0]
    ((owner, expires),) = _query(db, "SELECT owner, expires_at FROM locks")
    assert expires > time.time(), "the killed run's lease should still be running"

    d.start()
    with d.client() as c:
        if time.time() < expires - 1:  # a slow restart may outlive the lease
            with pytest.raises(Conflict, match=str(owner)):
                c.call(DreamsRun(phase="light-sleep"))  # the dead daemon's lease still runs
        res = crash_driver.light_sleep_once_unlocked(c, ttl + 30)
        assert res is not None, "the lock was never taken over"
        assert res.report is not None and res.report.status == "completed"
    ((status, notes),) = _query(db, f"SELECT status, notes FROM dream_runs WHERE id = {run_id}")
    assert status == "failed" and "interrupted" in notes
    assert not _query(db, "SELECT id FROM dream_runs WHERE status = 'running'")
    assert _query(db, "PRAGMA integrity_check") == [("ok",)]
    assert d.stop() == 0


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_lookup_miss_is_classified(daemon: Daemon) -> None:
    """The driver's diagnosis of a vector lookup that missed: a lookup that finds
    the memory when repeated is called transient; one whose memory ranks low on
    its own vector says so, with the position it holds."""
    with daemon.client() as c:
        odd = c.remember("zebra quartz violin", workspace="w").id
        for i in range(30):
            c.remember(f"deploy staging cluster rollback plan number {i}", workspace="w")
        wait_indexed(c)
        found = crash_driver._diagnose(c, odd, "zebra quartz violin")
        assert found.startswith("transient"), found
        low = crash_driver._diagnose(c, odd, "deploy staging cluster rollback plan")
        assert low.startswith("ranked below others by cosine"), low
        assert "at position" in low and "vector_rank" in low, low
