"""The vector indexer paces itself while clients are served (store/index_pacing.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dream_store import open_db, remember
from reverie.store import index_pacing, vectors
from reverie.store.embed_lexical import LexicalEmbedder
from reverie.store.index_apply import apply_changes
from reverie.store.index_generation import Generation
from reverie.store.index_pacing import (
    PACE_MAX_SLEEP_S,
    PACE_RATIO,
    PACED_ADD,
    QUIET_WAIT_S,
    pace,
)
from reverie.store.vector_index import HnswParams, VectorIndex


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


def test_busy_then_waits_for_a_gap_between_requests(slept: list[float]) -> None:
    waited: list[float] = []
    pace(lambda: True, 0.004, lambda s: waited.append(s) or True)
    assert slept == [PACE_RATIO * 0.004] and waited == [QUIET_WAIT_S]


def test_alone_there_is_no_gap_to_wait_for(slept: list[float]) -> None:
    waited: list[float] = []
    pace(lambda: False, 0.004, lambda s: waited.append(s) or True)
    assert slept == [0] and waited == []


def test_nothing_worked_nothing_slept(slept: list[float]) -> None:
    pace(lambda: True, 0.0)
    assert slept == [0]


def test_changes_reach_the_indexes_in_paced_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catch-up batch holds each index's exclusive lock for at most PACED_ADD
    insertions at a time, paced after each, and still indexes everything."""
    conn = open_db(tmp_path)
    n = 4 * PACED_ADD + 3  # the small workspace alone gets more than PACED_ADD
    for i in range(n):
        ws = ("big", "small")[i % 2]
        remember(conn, f"note {i} about {ws}", 1e9 + i, workspace=ws)
    embedder = LexicalEmbedder(64)
    params = HnswParams(m=8, ef_construction=32, ef=64, threads=2)
    gen = Generation(embedder, VectorIndex(64, model_id=embedder.model_id, params=params), 0)
    gen.scoped.by_ws["small"] = VectorIndex(64, model_id=embedder.model_id, params=params)
    batches: list[int] = []
    real_add = VectorIndex.add

    def add(self: VectorIndex, ids: Any, rows: Any) -> None:
        batches.append(len(ids))
        real_add(self, ids, rows)

    monkeypatch.setattr(VectorIndex, "add", add)
    steps: list[float] = []
    changes = vectors.changed_since(conn, 0, 1000)
    apply_changes(conn, gen, changes, embed=lambda e, t: e.embed(t), pace=steps.append)

    small = n // 2
    assert gen.index.live_count == n and gen.scoped.by_ws["small"].live_count == small
    assert max(batches) <= PACED_ADD and sum(batches) == n + small
    assert len(steps) >= len(batches)  # a pause (or a GIL hand-over) after every add
    query = embedder.embed(["note 7 about small"])[0]
    assert gen.index.query(query, 1).ids.tolist() == [8]
    assert gen.scoped.by_ws["small"].query(query, 1).ids.tolist() == [8]
