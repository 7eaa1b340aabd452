"""Dream pacing (phases/cancel.py): a run yields the GIL only while clients are served.

A paced Cancel sleeps, at its checks, as long as its thread just worked; with
a `busy` callable it does so only while that says clients are being served,
so a run alone on an idle daemon goes at full speed. The sleeps are observed
through the Event the Cancel waits on, not timed.
"""

from __future__ import annotations

import threading
import time

from reverie.daemon.metrics import Metrics
from reverie.phases import cancel as cancel_mod
from reverie.phases.cancel import Cancel
from reverie.rpc.protocol import Ping


class _RecordingEvent:
    """A threading.Event stand-in that records the pauses asked of it."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._flag = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        return False

    def is_set(self) -> bool:
        return self._flag.is_set()

    def set(self) -> None:
        self._flag.set()


def _work(seconds: float) -> None:
    """Burn this thread's CPU time (thread_time is what pacing counts)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _work_between_checks(c: Cancel) -> None:
    """A check, more than one slice of CPU work, a check: the pattern pacing acts on."""
    c.check()  # the first check starts the thread's account
    _work(cancel_mod.PACE_SLICE_S * 2)
    c.check()


def _paced(busy: bool | None) -> tuple[Cancel, _RecordingEvent]:
    c = Cancel(pace=True, busy=None if busy is None else (lambda: busy))
    ev = _RecordingEvent()
    c._event = ev  # type: ignore[assignment]
    return c, ev


def test_a_busy_daemon_gets_pauses_as_long_as_the_work() -> None:
    c, ev = _paced(busy=True)
    _work_between_checks(c)
    assert len(ev.waits) == 1
    assert cancel_mod.PACE_SLICE_S * 2 <= ev.waits[0] <= cancel_mod.PACE_MAX_SLEEP_S
    c.pause(5.0)  # a writer batch that took 5 s: the pause is capped
    assert ev.waits[-1] == cancel_mod.PACE_MAX_SLEEP_S


def test_an_idle_daemon_runs_dreams_at_full_speed() -> None:
    c, ev = _paced(busy=False)
    _work_between_checks(c)
    c.pause(0.05)
    assert ev.waits == []


def test_without_busy_a_paced_cancel_always_pauses_and_an_unpaced_never() -> None:
    c, ev = _paced(busy=None)
    _work_between_checks(c)
    assert len(ev.waits) == 1
    plain = Cancel()
    rec = _RecordingEvent()
    plain._event = rec  # type: ignore[assignment]
    _work_between_checks(plain)
    plain.pause(0.05)
    assert rec.waits == []


def test_metrics_serving_follows_the_last_answered_request() -> None:
    m = Metrics()
    assert not m.serving()
    m.request(Ping, 0.001, None)
    assert m.serving()
    m.last_answer -= 5.0  # as if answered 5 s ago
    assert not m.serving(within_s=1.0)
