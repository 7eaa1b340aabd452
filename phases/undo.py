"""Undo a dream run: reverse its recorded ops, newest first, in one transaction.

Each op restores the exact before-state stored in `dream_ops.data` (tiers
back, metadata keys back, created summaries purged to tombstones). An op
whose memory changed again after the run (by a later run or a client) is
left alone and counted as a conflict, rather than overwriting that newer
change. The run is marked 'undone' and a ledger line is appended; a second
undo is refused (Conflict), as is undoing a run that is still running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import apsw
from reverie.errors import Conflict
from reverie.phases import ledger
from reverie.phases.ops import undo_op
from reverie.phases.runner import Transact
from reverie.rpc.proto_dreams import UndoReport as UndoReport  # defined with the protocol


def undo_in(conn: apsw.Connection, run_id: int, now: float) -> tuple[ledger.RunRecord, int, int]:
    """Reverse run `run_id` in the caller's transaction; (run, reversed, conflicts)."""
    run = ledger.get_run(conn, run_id)
    if run.status == "undone":
        raise Conflict(f"dream run {run_id} was already undone", data={"id": run_id})
    if run.status == "running":
        raise Conflict(f"dream run {run_id} is still running", data={"id": run_id})
    done = conflicts = 0
    for _seq, name, data in reversed(ledger.run_ops(conn, run_id)):
        if undo_op(conn, name, data, now, run_id):
            done += 1
        else:
            conflicts += 1
    ledger.mark_undone(conn, run_id, now)
    return ledger.get_run(conn, run_id), done, conflicts


def undo(
    run_id: int,
    *,
    transact: Transact,
    data_dir: Path | None = None,
    clock: Callable[[], float] = time.time,
) -> UndoReport:
    """Undo a run (one transaction), then append the ledger line."""
    t0 = time.monotonic()
    now = clock()
    run, done, conflicts = transact(lambda c: undo_in(c, run_id, now))
    ms = int((time.monotonic() - t0) * 1000)
    line = ledger.entry(run, event="undo")
    line.update(
        {
            "startedAt": ledger.iso(now),
            "completedAt": ledger.iso(now + ms / 1000),
            "durationMs": ms,
            "trigger": "manual",
            "itemsProcessed": done,
            "counts": {"reversed": done, "conflicts": conflicts},
            "notes": f"undo of run {run_id}",
            "errors": [],
        }
    )
    ledger.append_line(data_dir, line)
    return UndoReport(
        run_id=run_id, phase=run.phase, reversed=done, conflicts=conflicts, duration_ms=ms
    )
