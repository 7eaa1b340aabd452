"""The dream phases' schedule (phases/schedule.py): crons, presets, the trio Scheduler.

Under trio's MockClock (autojump): the wall clock is BASE + trio time, so
days of schedule pass in milliseconds and every firing time is exact.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
import trio
import trio.testing
from reverie.daemon import config
from reverie.daemon.config import DreamPhaseConfig, DreamsConfig
from reverie.errors import ConfigError, InvalidParams
from reverie.phases.schedule import (
    PRESETS,
    PhaseSchedule,
    Scheduler,
    compile_schedules,
    normalize_phase,
)

BASE = datetime(2026, 1, 10, 12, 0, tzinfo=UTC).timestamp()  # a Saturday
HOUR = 3600.0
DAY = 86400.0


def wall() -> float:
    return BASE + trio.current_time()


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def schedules(tz: str = "UTC", **crons: str) -> dict[str, PhaseSchedule]:
    phases = {name: DreamPhaseConfig(cron=cron) for name, cron in crons.items()}
    return compile_schedules(DreamsConfig(preset="off", timezone=tz, phases=phases))


def run_scheduler(
    sched: dict[str, PhaseSchedule],
    for_s: float,
    *,
    run_s: float = 0.0,
    last_run: Callable[[str], Awaitable[float | None]] | None = None,
    **kwargs: object,
) -> tuple[list[tuple[str, str, float]], Scheduler]:
    """Run a Scheduler for `for_s` seconds; each run takes `run_s`. Returns the starts."""
    starts: list[tuple[str, str, float]] = []
    box: list[Scheduler] = []

    async def run(phase: str, trigger: str) -> None:
        starts.append((phase, trigger, wall()))
        await trio.sleep(run_s)

    async def main() -> None:
        s = Scheduler(sched, run, last_run=last_run, clock=wall, **kwargs)  # type: ignore[arg-type]
        box.append(s)
        async with trio.open_nursery() as nursery:
            await nursery.start(s.serve)
            await trio.sleep(for_s)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return starts, box[0]


def test_fires_at_the_cron_times_in_its_timezone() -> None:
    # 03:00 in New York is 08:00 UTC in January (EST, UTC-5).
    starts, _ = run_scheduler(schedules("America/New_York", rem="0 3 * * *"), 3 * DAY)
    assert [(p, t, utc(ts)) for p, t, ts in starts] == [
        ("rem", "scheduled", "2026-01-11 08:00:00"),
        ("rem", "scheduled", "2026-01-12 08:00:00"),
        ("rem", "scheduled", "2026-01-13 08:00:00"),
    ]


def test_follows_daylight_saving_time() -> None:
    # Paris moves to UTC+2 on 2026-03-29: 03:00 local is 02:00 UTC, then 01:00 UTC.
    global BASE
    saved, BASE = BASE, datetime(2026, 3, 27, 12, 0, tzinfo=UTC).timestamp()
    try:
        sched = compile_schedules(
            DreamsConfig(
                preset="off",
                phases={"rem": DreamPhaseConfig(cron="0 3 * * *", timezone="Europe/Paris")},
            )
        )
        starts, _ = run_scheduler(sched, 3 * DAY)
    finally:
        BASE = saved
    assert [utc(ts) for _, _, ts in starts] == [
        "2026-03-28 02:00:00",
        "2026-03-29 01:00:00",
        "2026-03-30 01:00:00",
    ]


def test_each_phase_on_its_own_schedule() -> None:
    sched = compile_schedules(DreamsConfig(preset="core", timezone="UTC"))
    starts, s = run_scheduler(sched, 2 * DAY, jitter_s=0)
    by_phase: dict[str, list[str]] = {}
    for phase, _, ts in starts:
        by_phase.setdefault(phase, []).append(utc(ts))
    # From Saturday 12:00 UTC: light sleep every 2 h at :15, REM nightly, deep Sunday 04:00.
    assert by_phase["light-sleep"][:3] == [
        "2026-01-10 12:15:00",
        "2026-01-10 14:15:00",
        "2026-01-10 16:15:00",
    ]
    assert len(by_phase["light-sleep"]) == 24
    assert by_phase["rem"] == ["2026-01-11 03:00:00", "2026-01-12 03:00:00"]
    assert by_phase["deep-sleep"] == ["2026-01-11 04:00:00"]
    assert s.skipped == {"light-sleep": 0, "rem": 0, "deep-sleep": 0}


def test_a_missed_run_runs_once_after_start() -> None:
    calls: list[str] = []

    async def last_run(phase: str) -> float | None:
        calls.append(phase)
        return BASE - 5 * DAY  # five nightly slots passed while the daemon was down

    starts, _ = run_scheduler(
        schedules(rem="0 3 * * *"), DAY, last_run=last_run, catch_up_delay_s=60
    )
    assert calls == ["rem"]
    assert [utc(ts) for _, _, ts in starts] == ["2026-01-10 12:01:00", "2026-01-11 03:00:00"]


def test_no_catch_up_when_nothing_was_missed_or_it_never_ran() -> None:
    async def ran_recently(phase: str) -> float | None:
        return BASE - HOUR  # after last night's 03:00 slot

    async def never(phase: str) -> float | None:
        return None

    for last_run in (ran_recently, never):
        starts, _ = run_scheduler(schedules(rem="0 3 * * *"), DAY, last_run=last_run)
        assert [utc(ts) for _, _, ts in starts] == ["2026-01-11 03:00:00"]


def test_a_catch_up_yields_to_an_earlier_regular_slot() -> None:
    async def last_run(phase: str) -> float | None:
        return BASE - 3 * HOUR

    # Slots were missed, but the catch-up (start + 2 h = 14:00) would come after
    # the next regular slot (13:00): that slot is the catch-up, run once.
    starts, _ = run_scheduler(
        schedules(rem="0 * * * *"), 1.5 * HOUR, last_run=last_run, catch_up_delay_s=2 * HOUR
    )
    assert [utc(ts) for _, _, ts in starts] == ["2026-01-10 13:00:00"]


def test_jitter_stays_within_bounds() -> None:
    starts, _ = run_scheduler(
        schedules(**{"light-sleep": "0 */2 * * *"}),
        4 * DAY + 1800,
        jitter_s=600,
        rng=random.Random(7),
    )
    offsets = [ts % (2 * HOUR) for _, _, ts in starts]
    assert len(offsets) == 48
    assert all(0 <= o <= 600 for o in offsets)
    assert len({round(o) for o in offsets}) > 40  # really random, not constant
    # A jitter larger than the interval is capped at half the gap between slots.
    starts, _ = run_scheduler(
        schedules(rem="*/10 * * * *"), 2 * HOUR + 300, jitter_s=3600, rng=random.Random(7)
    )
    offsets = [ts % 600 for _, _, ts in starts]
    assert len(offsets) == 12 and all(0 <= o <= 300 for o in offsets)
    assert max(offsets) > 100  # applied, within the cap (seeded)


def test_same_seed_same_times() -> None:
    a, _ = run_scheduler(schedules(rem="0 * * * *"), DAY, jitter_s=300, rng=random.Random(1))
    b, _ = run_scheduler(schedules(rem="0 * * * *"), DAY, jitter_s=300, rng=random.Random(1))
    assert a == b


def test_a_phase_never_overlaps_itself() -> None:
    # Hourly slots, each run takes 2.5 h: the two slots during a run are skipped.
    starts, s = run_scheduler(schedules(rem="0 * * * *"), 10.5 * HOUR, run_s=2.5 * HOUR)
    times = [ts for _, _, ts in starts]
    assert [utc(t)[11:] for t in times] == ["13:00:00", "16:00:00", "19:00:00", "22:00:00"]
    assert all(b - a >= 2.5 * HOUR for a, b in itertools.pairwise(times))
    assert s.skipped["rem"] == 6 and s.started["rem"] == 4


def test_a_failing_run_does_not_stop_the_schedule() -> None:
    starts: list[float] = []

    async def run(phase: str, trigger: str) -> None:
        starts.append(wall())
        raise RuntimeError("phase crashed")

    async def main() -> None:
        s = Scheduler(schedules(rem="0 * * * *"), run, clock=wall)
        async with trio.open_nursery() as nursery:
            await nursery.start(s.serve)
            await trio.sleep(3.5 * HOUR)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(starts) == 3


def test_next_runs_and_reconfigure() -> None:
    starts: list[tuple[str, float]] = []

    async def run(phase: str, trigger: str) -> None:
        starts.append((phase, wall()))

    async def main() -> None:
        s = Scheduler(schedules(rem="0 3 * * *"), run, clock=wall)
        async with trio.open_nursery() as nursery:
            await nursery.start(s.serve)
            await trio.testing.wait_all_tasks_blocked()
            nxt = s.next_runs()
            assert nxt["rem"] is not None and utc(nxt["rem"]) == "2026-01-11 03:00:00"
            assert nxt["light-sleep"] is None
            await trio.sleep(HOUR)
            s.reconfigure(schedules(**{"rem": "off", "lightSleep": "30 * * * *"}), jitter_s=0)
            await trio.testing.wait_all_tasks_blocked()
            nxt = s.next_runs()
            assert nxt["rem"] is None
            assert (
                nxt["light-sleep"] is not None and utc(nxt["light-sleep"]) == "2026-01-10 13:30:00"
            )
            await trio.sleep(DAY)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert {p for p, _ in starts} == {"light-sleep"} and len(starts) == 24


def test_off_schedules_nothing() -> None:
    sched = compile_schedules(DreamsConfig(preset="off"))
    assert all(s.cron is None for s in sched.values())
    starts, _ = run_scheduler(sched, 30 * DAY)
    assert starts == []


# -- configuration ------------------------------------------------------------------


def test_presets_and_overrides() -> None:
    core = compile_schedules(DreamsConfig(timezone="UTC"))
    assert {p: s.cron for p, s in core.items()} == PRESETS["core"]
    deep = compile_schedules(DreamsConfig(preset="deep", timezone="Asia/Tokyo"))
    assert deep["rem"].cron == "30 */6 * * *" and deep["rem"].zone_name == "Asia/Tokyo"
    cfg = config.parse(
        "[dreams]\npreset = 'core'\ntimezone = 'UTC'\n"
        "[dreams.phases.deepSleep]\ncron = 'off'\n"
        "[dreams.phases.lightSleep]\ntimezone = 'Europe/Paris'\n"
        "[dreams.phases.rem]\ncron = '@daily'\n"
    )
    got = compile_schedules(cfg.dreams)
    assert got["deep-sleep"].cron is None
    assert got["light-sleep"].cron == PRESETS["core"]["light-sleep"]
    assert got["light-sleep"].zone_name == "Europe/Paris"
    assert got["rem"].cron == "@daily" and got["rem"].zone_name == "UTC"
    # The default zone is the system's, whatever it is.
    assert compile_schedules(DreamsConfig())["rem"].zone_name


def test_phase_names_are_normalized() -> None:
    for name in ("lightSleep", "light-sleep", "light_sleep", "LightSleep"):
        assert normalize_phase(name) == "light-sleep"
    assert normalize_phase("deepSleep") == "deep-sleep"
    assert normalize_phase("REM") == "rem"
    with pytest.raises(InvalidParams, match="unknown phase 'nap'"):
        normalize_phase("nap")


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[dreams.phases.rem]\ncron = '61 * * * *'\n", r"dreams\.phases\.rem\.cron.*invalid cron"),
        ("[dreams.phases.lightSleep]\ncron = 'every hour'\n", r"dreams\.phases\.lightSleep\.cron"),
        ("[dreams.phases.rem]\ncron = '* * * * * *'\n", r"dreams\.phases\.rem\.cron"),  # seconds
        ("[dreams.phases.rem]\ncron = '@reboot'\n", r"dreams\.phases\.rem\.cron"),
        ("[dreams.phases.rem]\ncron = '0 0 30 2 *'\n", r"dreams\.phases\.rem\.cron.*never matches"),
        ("[dreams]\ntimezone = 'Mars/Olympus'\n", r"dreams\.timezone.*Mars/Olympus"),
        ("[dreams.phases.rem]\ntimezone = 'Nowhere'\n", r"dreams\.phases\.rem\.timezone"),
        ("[dreams.phases.nap]\ncron = '0 3 * * *'\n", r"dreams\.phases\.nap.*unknown phase"),
        (
            "[dreams.phases.lightSleep]\ncron = '0 * * * *'\n"
            "[dreams.phases.light-sleep]\ncron = '0 * * * *'\n",
            r"configured twice",
        ),
        ("[dreams]\npreset = 'sometimes'\n", r"dreams\.preset"),
        ("[dreams]\njitter_s = -1\n", r"dreams\.jitter_s"),
        ("[dreams.phases.rem]\nschedule = '0 3 * * *'\n", r"unknown field `schedule`"),
    ],
)
def test_bad_dreams_config_is_refused_with_the_key_named(toml: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named) as e:
        config.parse(toml, "t.toml")
    assert str(e.value).startswith("t.toml: ")
