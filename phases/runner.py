"""Plan, then apply: the frame every phase runs in.

    plan = phase.plan(conn, now)             # pure read (a reader connection is enough)
    report = apply_plan(plan, transact=..., check=..., trigger=..., data_dir=...)

A dry run is just the plan: nothing is written, not even the ledger.
`apply_plan` opens a `dream_runs` row, applies the ops in batches, one
transaction each (`transact(fn)` runs `fn(conn)` in a transaction and
returns its value: `Writer.run_sync` in the daemon, `transact_on(conn)` on a
plain connection), records every applied op in `dream_ops`, and calls
`check(conn)` at the end of each batch, inside its transaction: that is
where the lock's fencing check goes. If `check` says the lock is lost, the
batch rolls back, the run stops and is marked failed; earlier batches stay
committed and recorded, so a partial run can still be undone.

Everything here is synchronous: the daemon runs it in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import apsw
import msgspec
from reverie.errors import (
    LockLost,
    ReverieError,
)
from reverie.phases import ledger
from reverie.phases.cancel import Cancel
from reverie.phases.ops import Op, apply_op
from reverie.rpc.proto_dreams import RunReport as RunReport  # defined with the protocol

T = TypeVar("T")
Transact = Callable[[Callable[[apsw.Connection], Any]], Any]
Check = Callable[[apsw.Connection], bool]
# A step after the ops (deep sleep's purge and maintenance): not ops, not
# undoable; it gets the same transact and fencing check, and returns a note.
After = Callable[[Transact, Check], str]
BATCH = 256  # ops per transaction: short enough not to stall the writer's other jobs
# While clients are being served: a batch is a transaction other writes queue
# behind (256 light-sleep ops ~25 ms of the writer, more under GIL contention).
BUSY_BATCH = 32


class Plan(msgspec.Struct, kw_only=True):
    """What a phase would do: the dry-run answer, and the input of `apply_plan`."""

    phase: str
    ops: list[Op]
    items: int  # memories examined (the run's itemsProcessed)
    notes: str = ""
    # REM's incremental state, kept in the run's ledger row (phases/rem_view.py):
    # the highest memory seq the plan read, and the memories left for the next run.
    watermark: int | None = None
    pending: list[int] = msgspec.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            name = type(op).__struct_config__.tag
            out[str(name)] = out.get(str(name), 0) + 1
        return out


class Phase(Protocol):
    name: str

    # `cancel` (phases/cancel.py) is checked between units of work: a shutdown
    # stops a long plan at the next check, with `Cancelled`.
    def plan(self, conn: apsw.Connection, now: float, cancel: Cancel = ...) -> Plan: ...


def transact_on(conn: apsw.Connection) -> Transact:
    """`transact` for a plain connection: each call is one transaction."""

    def run(fn: Callable[[apsw.Connection], Any]) -> Any:
        with conn:
            return fn(conn)

    return run


def _always(_conn: apsw.Connection) -> bool:
    return True


def apply_plan(
    plan: Plan,
    *,
    transact: Transact,
    trigger: ledger.Trigger = "manual",
    check: Check = _always,
    data_dir: Path | None = None,
    clock: Callable[[], float] = time.time,
    batch: int | Callable[[], int] = BATCH,
    after: After | None = None,
) -> RunReport:
    """Apply `plan` in batches with the ledger around it; never raises for a failed batch.

    `batch`: ops per transaction, or a function asked before each batch (the
    daemon's runs: smaller while clients are being served).
    """
    started = clock()
    t0 = time.monotonic()
    run_id: int = transact(lambda c: ledger.start_run(c, plan.phase, trigger, started))
    counts: dict[str, int] = {}
    errors: list[str] = []
    seq = 0
    i = 0
    while i < len(plan.ops):
        size = max(1, batch() if callable(batch) else batch)
        chunk = plan.ops[i : i + size]
        i += size

        def job(conn: apsw.Connection, chunk: list[Op] = chunk, first: int = seq) -> dict[str, int]:
            done: dict[str, int] = {}
            n = first
            now = clock()
            for op in chunk:
                applied = apply_op(conn, op, now)
                if applied is None:
                    done["skipped"] = done.get("skipped", 0) + 1
                    continue
                n += 1
                ledger.record_op(conn, run_id, n, applied)
                done[applied.op] = done.get(applied.op, 0) + 1
            if not check(conn):
                raise LockLost(f"{plan.phase}: lost the phase lock; run stopped before commit")
            return done

        try:
            done: dict[str, int] = transact(job)
        except (ReverieError, apsw.Error) as e:
            errors.append(str(e))
            break
        for k, v in done.items():
            counts[k] = counts.get(k, 0) + v
        seq += sum(v for k, v in done.items() if k != "skipped")
    notes = plan.notes
    if after is not None and not errors:
        try:
            notes = f"{notes}; done: {after(transact, check)}"
        except (ReverieError, apsw.Error) as e:
            errors.append(str(e))
    completed = clock()
    status: ledger.Status = "failed" if errors else "completed"
    if errors:
        notes = f"{notes} (stopped: {errors[-1]})".strip()
    record: ledger.RunRecord = transact(
        lambda c: ledger.finish_run(
            c,
            run_id,
            status=status,
            completed_at=completed,
            duration_ms=int((time.monotonic() - t0) * 1000),
            items_processed=plan.items,
            counts=counts,
            notes=notes,
            errors=errors,
            watermark=plan.watermark,
            pending=plan.pending,
        )
    )
    ledger.append_line(data_dir, ledger.entry(record))
    return RunReport(
        run_id=run_id,
        phase=plan.phase,
        trigger=trigger,
        status=status,
        started_at=started,
        completed_at=completed,
        duration_ms=record.duration_ms or 0,
        items_processed=plan.items,
        planned=len(plan.ops),
        counts=counts,
        notes=notes,
        errors=errors,
    )
