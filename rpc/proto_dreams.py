"""The dream phases over RPC: run (or dry-run) a phase, undo a run, status.

The result structs of phases/runner.py, phases/undo.py and phases/ledger.py
(RunReport, UndoReport, RunRecord) are defined here, and imported there:
this module is part of the protocol, which the hooks import on their hot
path, so it may import msgspec and the standard library only. A dry run's
Plan holds ops defined in phases/ops.py (which needs the store), so it
crosses the wire as DreamPlan, each op as a plain map tagged by `type`.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct
from reverie.rpc._base import SQLITE_MAX_INT, _Request

PhaseName = Annotated[str, Meta(min_length=1, max_length=64)]

# --- requests ----------------------------------------------------------------


class DreamsRun(_Request, tag="dreams_run"):
    """Run a phase now and wait for it; `dry_run` returns the plan and writes nothing."""

    phase: PhaseName
    dry_run: bool = False


class DreamsUndo(_Request, tag="dreams_undo"):
    run_id: Annotated[int, Meta(ge=1, le=SQLITE_MAX_INT)]


class DreamsStatus(_Request, tag="dreams_status"):
    window_hours: Annotated[float, Meta(gt=0, le=24 * 366)] = 24.0


# --- results -----------------------------------------------------------------


class RunRecord(Struct, kw_only=True):
    """One `dream_runs` row (phases/ledger.py)."""

    id: int
    phase: str
    trigger: str
    status: str  # running | completed | failed | undone
    started_at: float
    completed_at: float | None
    duration_ms: int | None
    items_processed: int
    counts: dict[str, int]
    notes: str
    errors: list[str]
    undone_at: float | None


class RunReport(Struct, kw_only=True):
    """What an applied run did (phases/runner.py apply_plan)."""

    run_id: int
    phase: str
    trigger: str
    status: str  # completed | failed
    started_at: float
    completed_at: float
    duration_ms: int
    items_processed: int
    planned: int
    counts: dict[str, int]  # applied ops per kind, plus "skipped"
    notes: str
    errors: list[str]


class UndoReport(Struct, kw_only=True):
    """What `dreams undo` reversed (phases/undo.py)."""

    run_id: int
    phase: str
    reversed: int  # ops reversed
    conflicts: int  # ops left alone because their memory changed after the run
    duration_ms: int


class DreamPlan(Struct, kw_only=True):
    """A dry run's answer: the ops a run would apply, as maps tagged by `type`."""

    phase: str
    items: int  # memories examined
    notes: str
    counts: dict[str, int]  # planned ops per kind
    ops: list[dict[str, Any]]


class DreamsRunResult(Struct, kw_only=True):
    """Exactly one of the two is set: `plan` for a dry run, `report` otherwise."""

    report: RunReport | None = None
    plan: DreamPlan | None = None


class LockState(Struct, kw_only=True):
    """The dreams lock's last holder; `held` is false once released or expired."""

    name: str
    owner: str
    token: int  # fencing token: grows on every acquisition
    acquired_at: float
    expires_at: float
    held: bool


class PhaseStatus(Struct, kw_only=True):
    phase: str
    available: bool  # built yet (only light-sleep so far)
    schedule: str | None  # cron expression; None: not scheduled
    timezone: str
    next_run: float | None  # unix time, jitter included; None: not scheduled
    running: bool
    runs: int  # in the window
    total_duration_ms: int
    items: int
    last_run: RunRecord | None  # latest run, in or before the window
    backlog: int | None  # None: not measured for this phase
    backlog_what: str = ""
    stuck: str = ""  # a warning when recent runs made no progress; "" when fine


class DreamsStatusResult(Struct, kw_only=True):
    now: float
    window_hours: float
    preset: str
    lock: LockState | None  # one lock for every phase (they touch the same rows)
    phases: list[PhaseStatus]
