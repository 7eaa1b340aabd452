"""The dream phases inside the daemon: run, dry-run, undo and status, under one lock.

One global lock (`dreams`) covers every phase: REM and deep sleep will
touch the same rows as light sleep, so two phases must not interleave, and
a second daemon on the same database (or a manual run during a scheduled
one) gets a Conflict. A dry run only reads: it takes no lock (the lock is a
row in `locks`) and writes no ledger.

All three phases are served (phases/light.py, phases/rem.py,
phases/deep.py). A phase missing from `phases` would be refused over RPC
with InvalidParams ("not available yet") and its schedule slots skipped
with one log line (`scheduled`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import apsw
import msgspec
import trio
from reverie.daemon.config import DreamsConfig
from reverie.daemon.metrics import METRICS  # metrics
from reverie.errors import Conflict, InvalidParams, ShuttingDown
from reverie.phases import ledger, locks, plan_priority, plan_worker, runner
from reverie.phases.cancel import Cancel, Cancelled
from reverie.phases.deep import Checkpoint, DeepSleep, checkpoint_on  # deep sleep
from reverie.phases.light import SCORE_KEY, LightConfig, LightSleep
from reverie.phases.names import PHASES, normalize_phase
from reverie.phases.plan_process import PlanProcessFailed, answer_of, run_worker
from reverie.phases.rem import Rem, RemConfig, ViewSource  # REM
from reverie.phases.runner import Phase, Plan, apply_plan
from reverie.phases.undo import undo
from reverie.rpc.proto_dreams import (
    DreamPlan,
    DreamsRunResult,
    DreamsStatusResult,
    LockState,
    PhaseStatus,
    RunReport,
    UndoReport,
)
from reverie.store.connection import open_connection  # deep sleep's checkpoint

if TYPE_CHECKING:
    from reverie.phases.schedule import Scheduler
    from reverie.store.database import Database

log = logging.getLogger("reverie.phases.service")
LOCK_NAME = "dreams"
STUCK_RUNS = 3  # this many runs in a row without progress make a warning
T = TypeVar("T")


def _noop(*_args: object) -> None:
    pass


def wire_plan(plan: Plan) -> DreamPlan:
    """A Plan as it crosses the wire (ops as maps tagged by `type`)."""
    return DreamPlan(
        phase=plan.phase,
        items=plan.items,
        notes=plan.notes,
        counts=plan.counts(),
        ops=[msgspec.to_builtins(op) for op in plan.ops],
    )


class Dreams:
    """Runs the phases for the daemon; `scheduler` is set by the daemon for status."""

    def __init__(
        self,
        db: Database,
        data_dir: Path | None,
        cfg: DreamsConfig,
        *,
        light: LightConfig | None = None,
        rem: RemConfig | None = None,  # REM: defaults when None
        rem_index: ViewSource | None = None,  # REM: the daemon's HNSW index (Indexer.view)
        written: Callable[[], None] = _noop,
        on_status: Callable[[str], None] = _noop,
        clock: Callable[[], float] = time.time,
        busy: Callable[[], bool] | None = None,  # clients being served? (pacing; None: always)
        compact: Callable[[], float | None] = lambda: None,  # deep sleep: the HNSW index
    ) -> None:
        self.busy = busy
        # load (issue 7): how a run's plan is made out of process (the command,
        # without the database path), or None: in a reader thread here.
        self.plan_in_process: list[str] | None = None
        self.starve_window_s = plan_priority.WINDOW_S  # see plan_idle
        self.compact = compact
        self.db = db
        self.data_dir = data_dir
        self.cfg = cfg
        # Tunables from [dreams.light_sleep] / [dreams.rem] / [dreams.deep_sleep]
        # unless given (tests).
        light = light or cfg.light_sleep
        rem = rem or cfg.rem
        self.phases: dict[str, Phase] = {"light-sleep": LightSleep(light)}
        self.phases["rem"] = Rem(rem, index=rem_index)  # REM: merge duplicates, supersede facts
        self.phases["deep-sleep"] = DeepSleep(cfg.deep_sleep, light=light)  # deep sleep
        self.written = written
        self.on_status = on_status
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.scheduler: Scheduler | None = None
        self._running: set[str] = set()
        self._unbuilt_logged: set[str] = set()
        # Set when the daemon begins to stop: every run's Cancel follows it.
        self._stopping = trio.Event()

    # -- cancellation (phases/cancel.py) -------------------------------------------

    @property
    def plan_idle(self) -> bool:
        """Plan under SCHED_IDLE, watched for starvation (phases/plan_priority.py):
        `[dreams] plan_idle`, as reloaded with the rest of `cfg`."""
        return self.cfg.plan_idle

    def shutdown(self) -> None:
        """The daemon is stopping: plans in progress stop at their next check (a
        few ms to ~0.1 s), an apply after its current batch; new runs are refused.
        Call from the trio thread."""
        self._stopping.set()

    async def _watched(
        self, work: Callable[[], Awaitable[T]], cancel: Cancel, *, abandon: bool = False
    ) -> T:
        """`await work()` (a worker thread's job) with `cancel` set on shutdown, or
        when this task is cancelled (the grace period over).

        Without `abandon` the thread is waited for: it holds a reader (or the
        writer) connection, which must be back before the database closes, and
        it stops at its next check. With `abandon` (the LLM step: HTTP only,
        no connection) a shutdown stops waiting for it at once.
        """
        result: list[T] = []
        # The work's own exception is carried out of the nursery by hand (as in
        # locks.hold): raised inside it, it would come out in an ExceptionGroup.
        error: Exception | None = None
        done = False
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:

                async def watch() -> None:
                    try:
                        await self._stopping.wait()
                    finally:
                        if not done:  # (done: the watcher is merely cancelled)
                            cancel.set(
                                "interrupted by shutdown"
                                if self._stopping.is_set()
                                else "interrupted (cancelled)"
                            )
                    if abandon:
                        scope.cancel()

                nursery.start_soon(watch)
                try:
                    result.append(await work())
                except Exception as e:
                    error = e
                finally:
                    done = True
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        if not result:  # abandoned
            raise Cancelled(cancel.reason)
        return result[0]

    async def _plan(self, name: str, impl: Phase, now: float, cancel: Cancel) -> Plan:
        """A run's plan: from a niced process of its own (phases/plan_worker.py) when
        configured, else (or if that process fails) in a reader thread here, paced."""
        began = time.monotonic()
        if (command := self.plan_in_process) is not None:
            try:
                return _planned(await self._watched_process(command, name, impl, now), began)
            except PlanProcessFailed as e:
                log.warning("dream_plan_process_failed phase=%s error=%s", name, e)
        plan = await self._watched(
            lambda: self.db.read(lambda c: impl.plan(c, now, cancel)), cancel
        )
        return _planned(plan, began, where="thread")

    async def _watched_process(
        self, command: list[str], name: str, impl: Phase, now: float
    ) -> Plan:
        """The plan from a plan worker; Cancelled if the daemon stops meanwhile
        (the process is killed: it wrote nothing).

        Under SCHED_IDLE first if configured, watched: a worker that starves
        there is killed and the plan made again at nice 10 (phases/plan_priority.py).
        """
        req = plan_worker.PlanRequest(phase=name, now=now, dreams=_configs_of(self.cfg, impl))
        db = str(self.db.path)
        if self.plan_idle and plan_priority.observable():
            out = await run_worker(
                [*command, "--idle", db], req, self._stopping, watch_s=self.starve_window_s
            )
            if out is not None:
                return answer_of(out)
            log.warning(
                "dream_plan_starved phase=%s window_s=%g replan_nice=%d",
                name,
                self.starve_window_s,
                plan_priority.NICENESS,
            )
        out = await run_worker([*command, db], req, self._stopping)
        assert out is not None  # only a watched worker starves
        return answer_of(out)

    async def _record_interrupted(
        self, name: str, trigger: ledger.Trigger, started: float, why: str
    ) -> None:
        """A failed ledger row (and JSON line) for a run stopped before applying anything."""

        def write(conn: apsw.Connection) -> ledger.RunRecord:
            run_id = ledger.start_run(conn, name, trigger, started)
            done = self.clock()
            return ledger.finish_run(
                conn,
                run_id,
                status="failed",
                completed_at=done,
                duration_ms=max(0, int((done - started) * 1000)),
                items_processed=0,
                counts={},
                notes=f"{why} while planning: nothing applied",
                errors=[why],
            )

        with trio.CancelScope(shield=True):  # the grace period may be over: still recorded
            record = await self.db.writer.run(write, single=True)
        ledger.append_line(self.data_dir, ledger.entry(record))
        log.warning("dream_run run_id=%d phase=%s status=failed why=%r", record.id, name, why)

    def _refuse_if_stopping(self) -> None:
        if self._stopping.is_set():
            raise ShuttingDown("the daemon is stopping: no new dream run")

    def phase(self, name: str) -> tuple[str, Phase]:
        """The canonical name and implementation; InvalidParams for unknown or unbuilt phases."""
        canonical = normalize_phase(name)
        impl = self.phases.get(canonical)
        if impl is None:
            built = ", ".join(self.phases)
            raise InvalidParams(
                f"phase {canonical} is not available yet (built: {built})",
                data={"phase": canonical},
            )
        return canonical, impl

    # -- run ----------------------------------------------------------------------

    async def run(
        self, phase: str, *, trigger: ledger.Trigger = "manual", dry_run: bool = False
    ) -> DreamsRunResult:
        name, impl = self.phase(phase)
        self._refuse_if_stopping()
        # A run is background work: paced (phases/cancel.py) so that requests
        # keep the GIL and the cores; a dry run has a caller waiting for it.
        cancel = Cancel(pace=not dry_run, busy=self.busy)
        if dry_run:
            now = self.clock()
            plan = await self._watched(
                lambda: self.db.read(lambda c: impl.plan(c, now, cancel)), cancel
            )
            return DreamsRunResult(plan=wire_plan(plan))
        if self._running:
            # This daemon's own run: say which (the lock would say only "held").
            raise Conflict(
                f"dream phase {', '.join(sorted(self._running))} is running; try again later",
                data={"running": sorted(self._running)},
            )
        self._running.add(name)
        try:
            async with locks.hold(
                self.db, LOCK_NAME, self.owner, self.cfg.lock_ttl_s, clock=self.clock
            ) as held:
                await self.db.writer.run(_close_orphans, single=True)
                self.on_status(f"dreaming: {name} planning")
                log.info("dream_planning phase=%s trigger=%s", name, trigger)
                now = self.clock()
                try:
                    plan = await self._plan(name, impl, now, cancel)
                    if isinstance(impl, Rem) and impl.cfg.llm.url:  # REM: the LLM's summaries
                        texts = await self.db.read(lambda c: impl.summary_inputs(c, plan))
                        self.on_status(f"dreaming: {name} writing summaries")
                        # Only HTTP calls (nothing written): a shutdown need not wait for them.
                        plan = await self._watched(
                            lambda: trio.to_thread.run_sync(
                                impl.refine, plan, texts, cancel, abandon_on_cancel=True
                            ),
                            cancel,
                            abandon=True,
                        )
                except Cancelled as e:
                    # Nothing was written: the ledger says the run was cut short.
                    await self._record_interrupted(name, trigger, now, e.message)
                    raise
                self.on_status(f"dreaming: {name} applying {len(plan.ops)} ops")
                clock, writer, data_dir = self.clock, self.db.writer, self.data_dir
                after = (  # deep sleep: checkpoint on a connection of its own
                    impl.maintenance(now, _checkpointer(self.db.path))
                    if isinstance(impl, DeepSleep)
                    else None
                )

                def check(conn: apsw.Connection) -> bool:
                    # Fencing, and a stop on shutdown (Cancelled, a ReverieError):
                    # the batch in flight rolls back and the run ends as failed.
                    cancel.check_now()  # inside the writer's transaction: no pause here
                    return held.check(conn, clock())

                def transact(fn: Callable[[apsw.Connection], T]) -> T:
                    # A batch's work is the writer thread's: pause as long as it
                    # took (at most 0.1 s), outside the transaction, so that the
                    # batches take at most half of the writer and of the GIL.
                    began = time.monotonic()
                    value = writer.run_sync(fn)
                    cancel.pause(time.monotonic() - began)
                    return value

                busy = self.busy or (lambda: True)  # None: always (as Cancel's pacing)

                def apply() -> RunReport:
                    return apply_plan(
                        plan,
                        transact=transact,
                        # load (issue 7): short transactions while clients write too
                        batch=lambda: runner.BUSY_BATCH if busy() else runner.BATCH,
                        check=check,
                        trigger=trigger,
                        data_dir=data_dir,
                        clock=clock,
                        after=after,  # deep sleep: purge and maintenance after the ops
                    )

                report = await self._watched(lambda: trio.to_thread.run_sync(apply), cancel)
                if report.counts:
                    self.written()  # the vector indexer follows new and changed memories
                if name == "deep-sleep" and report.status == "completed":
                    # Compacting the HNSW index is its owner's work (a rebuild from
                    # the stored vectors in the indexer's task); deep sleep asks.
                    # The indexer logs `index_compaction` when it starts one.
                    self.compact()
        finally:
            self._running.discard(name)
            self.on_status("")
        log.info(  # logs (issue 6): key=value, grep-able
            "dream_run run_id=%d phase=%s status=%s duration_ms=%d counts=%s",
            report.run_id,
            name,
            report.status,
            report.duration_ms,
            ",".join(f"{k}:{v}" for k, v in report.counts.items()) or "-",
        )
        METRICS.phase(name, report.status, report.duration_ms / 1000)  # metrics
        return DreamsRunResult(report=report)

    async def scheduled(self, phase: str, trigger: str) -> None:
        """The scheduler's `run`: unbuilt phases are skipped (logged once each)."""
        name = normalize_phase(phase)
        if name not in self.phases:
            if name not in self._unbuilt_logged:
                self._unbuilt_logged.add(name)
                log.info("%s is scheduled but not built yet: skipped", name)
            return
        await self.run(name, trigger="scheduled" if trigger == "scheduled" else "manual")

    async def last_run(self, phase: str) -> float | None:
        """The scheduler's `last_run`: when the phase last started (from the ledger)."""
        runs = await self.db.read(ledger.last_runs)
        run = runs.get(normalize_phase(phase))
        return run.started_at if run is not None else None

    # -- undo ---------------------------------------------------------------------

    async def undo(self, run_id: int) -> UndoReport:
        if self._running:
            raise Conflict(
                f"dream phase {', '.join(sorted(self._running))} is running; undo after it",
                data={"running": sorted(self._running)},
            )
        self._running.add("undo")
        try:
            async with locks.hold(
                self.db, LOCK_NAME, self.owner, self.cfg.lock_ttl_s, clock=self.clock
            ):
                self.on_status(f"dreaming: undoing run {run_id}")
                writer, data_dir, clock = self.db.writer, self.data_dir, self.clock
                report = await trio.to_thread.run_sync(
                    lambda: undo(run_id, transact=writer.run_sync, data_dir=data_dir, clock=clock)
                )
        finally:
            self._running.discard("undo")
            self.on_status("")
        self.written()
        return report

    # -- status -------------------------------------------------------------------

    async def status(self, window_hours: float) -> DreamsStatusResult:
        now = self.clock()
        since = now - window_hours * 3600

        Runs = dict[str, list[ledger.RunRecord]]

        def read(conn: apsw.Connection) -> tuple[Runs, Runs, int, locks.LockInfo | None]:
            recent = {
                p: ledger.recent_runs(conn, phase=p, since=since, limit=10_000) for p in PHASES
            }
            last3 = {p: ledger.recent_runs(conn, phase=p, limit=STUCK_RUNS) for p in PHASES}
            unscored = conn.execute(
                "SELECT count(*) FROM memories WHERE state = 'active' "
                f"AND json_extract(metadata, '$.{SCORE_KEY}') IS NULL"
            ).fetchone()
            return (
                recent,
                last3,
                int(unscored[0]) if unscored else 0,
                locks.holder(conn, LOCK_NAME, now),
            )

        recent, last3, unscored, lock = await self.db.read(read)
        sched = self.scheduler
        nexts = sched.next_runs() if sched is not None else {}
        running = set(sched.running()) if sched is not None else set()
        running |= self._running
        schedules = sched.schedules() if sched is not None else {}
        phases = []
        for p in PHASES:
            runs = recent[p]
            backlog = unscored if p == "light-sleep" else None
            s = schedules.get(p)
            phases.append(
                PhaseStatus(
                    phase=p,
                    available=p in self.phases,
                    schedule=s.cron if s is not None else None,
                    timezone=s.zone_name if s is not None else "",
                    next_run=nexts.get(p),
                    running=p in running,
                    runs=len(runs),
                    total_duration_ms=sum(r.duration_ms or 0 for r in runs),
                    items=sum(r.items_processed for r in runs),
                    last_run=last3[p][0] if last3[p] else None,
                    backlog=backlog,
                    backlog_what="active memories not scored yet" if backlog is not None else "",
                    stuck=stuck_warning(last3[p], backlog),
                )
            )
        lock_state = None
        if lock is not None:
            lock_state = LockState(
                name=lock.name,
                owner=lock.owner,
                token=lock.token,
                acquired_at=lock.acquired_at,
                expires_at=lock.expires_at,
                held=lock.held,
            )
        return DreamsStatusResult(
            now=now,
            window_hours=window_hours,
            preset=self.cfg.preset,
            lock=lock_state,
            phases=phases,
        )


def _checkpointer(path: Path) -> Checkpoint:
    """Deep sleep's WAL checkpoint(TRUNCATE): the writer's jobs all run inside a
    transaction, where SQLite refuses to checkpoint, so it gets a short-lived
    write connection (waiting on the writer through the busy timeout)."""

    def run() -> tuple[int, int, int]:
        conn = open_connection(path)
        try:
            return checkpoint_on(conn)()
        finally:
            conn.close()

    return run


def _close_orphans(conn: apsw.Connection) -> None:
    """Mark runs left 'running' by a killed daemon as failed (their ops stay undoable).

    Called with the lock held: every phase runs under that one lock, so no
    other run can be going, and a 'running' row is one whose daemon died.
    """
    conn.execute(
        "UPDATE dream_runs SET status = 'failed', "
        "notes = trim(notes || ' (interrupted: the daemon stopped mid-run)') "
        "WHERE status = 'running'"
    )


def _changes(run: ledger.RunRecord) -> dict[str, int]:
    return {k: v for k, v in run.counts.items() if k != "skipped" and v}


def stuck_warning(last: list[ledger.RunRecord], backlog: int | None) -> str:
    """A warning when the last STUCK_RUNS finished runs made no progress, or the same one."""
    done = [r for r in last if r.status in ("completed", "failed")]
    if len(done) < STUCK_RUNS or len(done) != len(last):
        return ""
    changes = [_changes(r) for r in done]
    if not any(changes) and backlog:
        return (
            f"the last {STUCK_RUNS} runs changed nothing while {backlog} items wait: "
            "check the daemon log"
        )
    if changes[0] and all(c == changes[0] for c in changes):
        return f"the last {STUCK_RUNS} runs produced identical counts {changes[0]}: a stuck cycle?"
    return ""


def _planned(plan: Plan, began: float, where: str = "process") -> Plan:
    log.info(
        "dream_planned phase=%s in=%s ops=%d seconds=%.2f",
        plan.phase,
        where,
        len(plan.ops),
        time.monotonic() - began,
    )
    return plan


def _configs_of(cfg: DreamsConfig, impl: Phase) -> DreamsConfig:
    """The dreams config with the phase's own settings (a Dreams built with
    explicit light/rem settings plans with those)."""
    match impl:
        case LightSleep():
            return msgspec.structs.replace(cfg, light_sleep=impl.cfg)
        case Rem():
            return msgspec.structs.replace(cfg, rem=impl.cfg)
        case DeepSleep():
            return msgspec.structs.replace(cfg, deep_sleep=impl.cfg, light_sleep=impl.light)
    return cfg
