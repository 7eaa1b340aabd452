"""When the dream phases run: per-phase cron expressions, presets, a trio scheduler.

The configuration (`[dreams]`, daemon/config.py) names a preset and may
override each phase's cron expression and timezone; compile_schedules()
checks it all with croniter and zoneinfo and names the offending key.
daemon/config.py calls it when the file has a `[dreams]` section, so a bad
expression is refused wherever the file is loaded (start and reload); it is
imported lazily there because croniter costs the CLI ~16 ms to import.

The Scheduler sleeps until each phase's next slot (plus jitter) and calls the
injected `run(phase, "scheduled")`. It runs each phase at most once at a
time, catches up once on a slot missed while the daemon was down, and reads
the wall clock through an injected function, so tests drive it with trio's
MockClock. The lock (phases/locks.py) is the caller's business: it is what
keeps two daemons, or a manual and a scheduled run, apart.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import trio
from croniter import CroniterError, croniter
from reverie.daemon.config import DreamsConfig
from reverie.errors import ConfigError, InvalidParams, ReverieError
from reverie.phases.names import PHASES, normalize_phase

log = logging.getLogger("reverie.phases.schedule")


# Presets. Light sleep is cheap and incremental (scores, session summaries),
# so it runs often enough that a summary exists by the next working session;
# REM (clustering over the whole store) runs nightly when the machine is
# idle; deep sleep (promotion, archiving, compaction) weekly, early Sunday,
# an hour after that night's REM so it promotes what REM merged. Minutes are
# offset (light sleep at :15) so that no two phases start at the same moment.
# `deep` is for busy stores: hourly / every 6 h / nightly. `off` schedules
# nothing; manual runs still work.
PRESETS: dict[str, dict[str, str | None]] = {
    "core": {"light-sleep": "15 */2 * * *", "rem": "0 3 * * *", "deep-sleep": "0 4 * * 0"},
    "deep": {"light-sleep": "15 * * * *", "rem": "30 */6 * * *", "deep-sleep": "0 4 * * *"},
    "off": {"light-sleep": None, "rem": None, "deep-sleep": None},
}
OFF = "off"  # as a phase's cron: never scheduled
_ALIASES = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}

Clock = Callable[[], float]
RunFn = Callable[[str, str], Awaitable[None]]
LastRunFn = Callable[[str], Awaitable[float | None]]


@dataclass(frozen=True, slots=True)
class PhaseSchedule:
    phase: str
    cron: str | None  # None: not scheduled
    zone: tzinfo
    zone_name: str

    def next_after(self, t: float) -> float | None:
        """The first slot strictly after unix time `t` (None when not scheduled)."""
        if self.cron is None:
            return None
        start = datetime.fromtimestamp(t, self.zone)
        nxt: datetime = croniter(self.cron, start).get_next(datetime)
        return nxt.timestamp()


def local_zone() -> tuple[tzinfo, str]:
    """The system's zone, by name where possible so that DST is followed."""
    candidates = []
    if tz := os.environ.get("TZ", "").lstrip(":"):
        candidates.append(tz)
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        try:
            return ZoneInfo(name), name
        except (ZoneInfoNotFoundError, ValueError):
            continue
    fixed = datetime.now().astimezone().tzinfo
    return (fixed, str(fixed)) if fixed is not None else (ZoneInfo("UTC"), "UTC")


def _zone(name: str, key: str) -> tuple[tzinfo, str]:
    try:
        return ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"{key}: unknown timezone {name!r} ({e})") from e


def check_cron(expr: str, key: str) -> str:
    """A five-field expression (or @daily etc.) that matches some time, else ConfigError."""
    expr = " ".join(expr.split())
    if expr.startswith("@"):
        ok = expr.lower() in _ALIASES
    else:
        # croniter also takes a sixth (seconds) field: a dream phase every
        # second is a mistake, not a schedule.
        ok = len(expr.split()) == 5 and croniter.is_valid(expr)
    if not ok:
        raise ConfigError(
            f"{key}: invalid cron expression {expr!r} "
            "(five fields: minute hour day-of-month month day-of-week, or @daily etc.; "
            "'off' disables the phase)"
        )
    try:
        croniter(expr, datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))).get_next(datetime)
    except (CroniterError, ValueError) as e:
        raise ConfigError(f"{key}: cron expression {expr!r} never matches ({e})") from e
    return expr


def compile_schedules(cfg: DreamsConfig) -> dict[str, PhaseSchedule]:
    """Every phase's schedule from the preset and overrides; ConfigError names the key."""
    overrides = {}
    for key, phase_cfg in cfg.phases.items():
        try:
            phase = normalize_phase(key)
        except InvalidParams as e:
            raise ConfigError(f"dreams.phases.{key}: {e.message}") from e
        if phase in overrides:
            raise ConfigError(f"dreams.phases.{key}: phase {phase} is configured twice")
        overrides[phase] = (key, phase_cfg)
    default_zone = _zone(cfg.timezone, "dreams.timezone") if cfg.timezone else local_zone()
    out = {}
    for phase in PHASES:
        cron = PRESETS[cfg.preset][phase]
        zone = default_zone
        if phase in overrides:
            key, pc = overrides[phase]
            if pc.cron:
                cron = None if pc.cron.strip() == OFF else pc.cron
            if cron is not None:
                cron = check_cron(cron, f"dreams.phases.{key}.cron")
            if pc.timezone:
                zone = _zone(pc.timezone, f"dreams.phases.{key}.timezone")
        out[phase] = PhaseSchedule(phase=phase, cron=cron, zone=zone[0], zone_name=zone[1])
    return out


class Scheduler:
    """Runs each scheduled phase at its slots; see the module docstring.

    `run(phase, trigger)` is awaited in a task of its own; its errors are
    logged, never fatal. `last_run(phase)` gives the wall time of the phase's
    last run (from the ledger) or None. Jitter is uniform in [0, jitter_s],
    capped at half the gap to the following slot so runs keep their order.
    """

    def __init__(
        self,
        schedules: Mapping[str, PhaseSchedule],
        run: RunFn,
        *,
        last_run: LastRunFn | None = None,
        jitter_s: float = 0.0,
        catch_up_delay_s: float = 60.0,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        recheck_s: float = 60.0,
    ) -> None:
        self._schedules = dict(schedules)
        self._run = run
        self._last_run = last_run
        self.jitter_s = jitter_s
        # A catch-up run waits this long after start: the daemon is busy
        # loading its index then, and a crash loop must not run a phase per
        # restart faster than this.
        self.catch_up_delay_s = catch_up_delay_s
        self._clock = clock
        self._rng = rng or random.Random()
        # Sleeps are cut into pieces this long and the wall clock re-read:
        # trio's clock stops while a laptop is suspended, the wall clock not.
        self._recheck_s = recheck_s
        self._running: set[str] = set()
        self._next: dict[str, float | None] = dict.fromkeys(self._schedules)
        self.skipped: dict[str, int] = dict.fromkeys(PHASES, 0)
        self.started: dict[str, int] = dict.fromkeys(PHASES, 0)
        self._changed = trio.Event()
        self._runs: trio.Nursery | None = None

    # -- what status shows ------------------------------------------------------

    def next_runs(self) -> dict[str, float | None]:
        """Each phase's next planned start (wall time, jitter included), None if none."""
        return dict(self._next)

    def schedules(self) -> dict[str, PhaseSchedule]:
        return dict(self._schedules)

    def running(self) -> frozenset[str]:
        return frozenset(self._running)

    def reconfigure(self, schedules: Mapping[str, PhaseSchedule], jitter_s: float) -> None:
        """Take new schedules (a reload): slots are recomputed; running runs continue."""
        self._schedules = dict(schedules)
        self.jitter_s = jitter_s
        self._changed.set()

    # -- the loop ---------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        catch_up = True
        async with trio.open_nursery() as runs:
            self._runs = runs
            while True:
                changed = self._changed = trio.Event()
                self._next = dict.fromkeys(self._schedules)
                async with trio.open_nursery() as loops:
                    for sched in self._schedules.values():
                        loops.start_soon(self._phase_loop, sched, catch_up)
                    if catch_up:
                        task_status.started()
                    catch_up = False
                    await changed.wait()
                    loops.cancel_scope.cancel()

    async def _phase_loop(self, sched: PhaseSchedule, catch_up: bool) -> None:
        phase = sched.phase
        now = self._clock()
        due = sched.next_after(now)
        if due is None:
            return
        if catch_up and self._last_run is not None and await self._missed(sched, now):
            # Once, however many slots passed: a run covers everything since
            # the last one. The regular slot is kept if it comes first.
            due = min(due, now + self.catch_up_delay_s)
            log.info("%s: a scheduled run was missed while down; running it at start", phase)
        while True:
            fire = due + self._jitter(sched, due)
            self._next[phase] = fire
            await self._sleep_until(fire)
            self._start(phase)
            # Slots that passed meanwhile (a suspend, a stalled loop) collapse into this run.
            nxt = sched.next_after(max(self._clock(), due))
            if nxt is None:
                return
            due = nxt

    async def _missed(self, sched: PhaseSchedule, now: float) -> bool:
        assert self._last_run is not None
        try:
            last = await self._last_run(sched.phase)
        except Exception as e:  # a broken ledger must not stop the schedule
            log.warning("%s: last run unknown (%s); no catch-up", sched.phase, e)
            return False
        if last is None:
            return False  # never ran: a new store has nothing to catch up on
        slot = sched.next_after(last)
        return slot is not None and slot <= now

    def _jitter(self, sched: PhaseSchedule, due: float) -> float:
        if self.jitter_s <= 0:
            return 0.0
        following = sched.next_after(due)
        cap = self.jitter_s if following is None else min(self.jitter_s, (following - due) / 2)
        return self._rng.uniform(0.0, max(cap, 0.0))

    async def _sleep_until(self, wall: float) -> None:
        while (left := wall - self._clock()) > 0:
            await trio.sleep(min(left, self._recheck_s))

    def _start(self, phase: str) -> None:
        if phase in self._running:
            self.skipped[phase] += 1
            log.warning("%s: the previous run is still going; this slot is skipped", phase)
            return
        assert self._runs is not None
        self._running.add(phase)
        self.started[phase] += 1
        self._runs.start_soon(self._run_one, phase)

    async def _run_one(self, phase: str) -> None:
        try:
            await self._run(phase, "scheduled")
        except ReverieError as e:
            # E.g. Conflict: another daemon holds the phase's lock.
            log.warning("%s: scheduled run did not complete: %s", phase, e.message)
        except Exception:
            log.exception("%s: scheduled run failed", phase)
        finally:
            self._running.discard(phase)
