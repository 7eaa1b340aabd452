"""The vector indexer paces itself while clients are served (store/index_pacing.py)."""

from __future__ import annotations

import pytest
from reverie.store import index_pacing
from reverie.store.index_pacing import PACE_MAX_SLEEP_S, PACE_RATIO, pace


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(index_pacing.time, "sleep", calls.append)
    return calls


def test_busy_sleeps_as_long_as_it_worked(slept: list[float]) -> None:
    pace(lambda: True, 0.004)
    assert slept == [PACE_RATIO * 0.004]


def test_a_long_step_sleeps_at_most_the_cap(slept: list[float]) -> None:
    pace(lambda: True, 5.0)
    assert slept == [PACE_MAX_SLEEP_S]


@pytest.mark.parametrize("busy", [None, lambda: False])
def test_alone_it_only_hands_the_gil_over(slept: list[float], busy: object) -> None:
    pace(busy, 0.004)  # type: ignore[arg-type]
    assert slept == [0]


def test_nothing_worked_nothing_slept(slept: list[float]) -> None:
    pace(lambda: True, 0.0)
    assert slept == [0]
