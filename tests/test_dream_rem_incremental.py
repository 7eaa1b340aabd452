"""REM's incremental runs: a watermark of change sequence numbers, and what a
capped run leaves for the next one (phases/rem_view.py, phases/rem.py).

Real SQLite stores planted as in test_dream_rem.py; a daemon for the path
through the plan worker process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import apsw
import pytest
from dream_store import DAY, open_db, remember
from harness import Daemon, wait_indexed
from reverie.phases.ops_rem import MergeDuplicates, SummarizeCluster, Supersede
from reverie.phases.rem import Rem, RemConfig
from reverie.phases.runner import Plan, apply_plan, transact_on
from reverie.rpc.proto_dreams import DreamsRun, DreamsRunResult
from reverie.store.connection import open_connection
from test_dream_rem import plant


def _run(conn: apsw.Connection, cfg: RemConfig, at: float) -> Plan:
    plan = Rem(cfg).plan(conn, at)
    apply_plan(plan, transact=transact_on(conn), clock=lambda: at)
    return plan


def _converge(conn: apsw.Connection, cfg: RemConfig, at: float, limit: int = 200) -> list[Plan]:
    """Runs until one changes nothing and leaves nothing (bounded)."""
    plans = []
    for i in range(limit):
        plan = _run(conn, cfg, at + i)
        plans.append(plan)
        if not plan.pending and not [
            op for op in plan.ops if op.__struct_config__.tag != "write_digest"
        ]:
            return plans
    raise AssertionError(f"REM did not settle in {limit} runs: {plans[-1].notes}")


def _outcome(conn: apsw.Connection) -> tuple[dict[int, tuple[str, Any]], list[list[int]]]:
    """What REM decided: each memory's state and replacement, and the active
    summaries' members that are still active (summary ids differ between histories)."""
    states = {
        int(i): (str(s), b)
        for i, s, b in conn.execute(
            "SELECT id, state, superseded_by FROM memories WHERE kind != 'summary' "
            "AND json_extract(metadata, '$.phase') IS NOT 'rem'"
        )
    }
    live = {i for i, (s, _) in states.items() if s == "active"}
    clusters = sorted(
        sorted(set(json.loads(str(p))["memories"]) & live)
        for (p,) in conn.execute(
            "SELECT provenance FROM memories WHERE kind = 'summary' AND state = 'active'"
        )
    )
    return states, clusters


def _ledger(conn: apsw.Connection) -> tuple[int | None, list[int]]:
    wm, pending = conn.execute(
        "SELECT watermark, pending FROM dream_runs WHERE phase = 'rem' ORDER BY id DESC LIMIT 1"
    ).fetchall()[0]
    return wm, json.loads(pending)


def _planted(tmp: Path, name: str, now: float) -> apsw.Connection:
    (tmp / name).mkdir()
    conn = open_db(tmp / name)
    plant(conn, now, ws="alpha")
    plant(conn, now, ws="beta")
    return conn


def test_a_write_between_plan_and_ledger_row_is_compared_next_run(tmp_path: Path) -> None:
    """The old rule (updated since the run's start, minus a margin) missed a write
    made after the plan read the store but before the run's row was written."""
    conn = open_db(tmp_path)
    now = time.time()
    plant(conn, now)
    orig = remember(conn, "The nightly export lands in the reporting bucket at 02:00.", now)
    plan = Rem().plan(conn, now + DAY)
    copy = remember(conn, "the nightly export lands in the reporting bucket at 02:00!", now)
    apply_plan(plan, transact=transact_on(conn), clock=lambda: now + 2 * DAY)  # after the copy
    assert _ledger(conn)[0] == plan.watermark and plan.watermark is not None
    assert int(conn.execute("SELECT seq FROM memories WHERE id = ?", (copy,)).get) > plan.watermark
    nxt = Rem().plan(conn, now + 3 * DAY)
    merges = [(op.canonical, op.sources) for op in nxt.ops if isinstance(op, MergeDuplicates)]
    assert merges == [(orig, [copy])]


def test_an_untouched_store_compares_nothing_the_second_time(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    plant(conn, now)
    first = _run(conn, RemConfig(), now + DAY)
    assert first.ops and not first.pending
    # What the first run wrote counts as changed: its survivors' provenance.
    survivors = {op.canonical for op in first.ops if isinstance(op, MergeDuplicates)}
    survivors |= {op.new_id for op in first.ops if isinstance(op, Supersede)}
    second = _run(conn, RemConfig(), now + DAY)
    assert f"compared {len(survivors)} changed of" in second.notes and second.ops == []
    third = _run(conn, RemConfig(), now + DAY)
    assert "compared 0 changed of" in third.notes and third.ops == []


def test_a_run_recorded_before_watermarks_leads_to_a_full_run(tmp_path: Path) -> None:
    """A store migrated from schema 7 has completed REM rows without a watermark."""
    conn = open_db(tmp_path)
    now = time.time()
    plant(conn, now)
    with conn:
        conn.execute(
            "INSERT INTO dream_runs (phase, trigger, started_at, completed_at, status) "
            "VALUES ('rem', 'manual', ?, ?, 'completed')",
            (now + DAY, now + DAY),
        )
    plan = Rem().plan(conn, now + 2 * DAY)
    assert f"compared {plan.items} changed of {plan.items} active" in plan.notes


@pytest.mark.parametrize(
    "cap",
    [
        {"max_pairs": 200},  # cuts inside a workspace, then skips the next one
        {"max_ops": 2},
        {"max_summaries": 1},
    ],
    ids=["max_pairs", "max_ops", "max_summaries"],
)
def test_a_capped_run_leaves_the_rest_to_the_next_and_ends_where_one_run_does(
    tmp_path: Path, cap: dict[str, int]
) -> None:
    now = time.time()
    whole = _planted(tmp_path, "whole", now)
    _converge(whole, RemConfig(), now + DAY)
    states, clusters = _outcome(whole)
    assert clusters and sum(s != "active" for s, _ in states.values()) > 50

    capped = _planted(tmp_path, "capped", now)
    plans = _converge(capped, RemConfig(**cap), now + DAY)  # type: ignore[arg-type]
    assert plans[0].pending and "changed memories left for the next run" in plans[0].notes
    assert _ledger(capped)[1] == [] and len(plans) > 3  # the last run left nothing
    got_states, got_clusters = _outcome(capped)
    assert got_states == states  # every merge and supersession, the same
    if "max_pairs" in cap:
        # Every cluster summarised; one more: made while the cut runs saw a
        # cluster before it grew past cluster_max_size (which one run leaves alone).
        assert [c for c in clusters if c not in got_clusters] == []
    else:
        assert got_clusters == clusters


def test_memories_of_a_waiting_cluster_are_pending(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    plant(conn, now)
    plan = _run(conn, RemConfig(max_summaries=1), now + DAY)
    (done,) = [op for op in plan.ops if isinstance(op, SummarizeCluster)]
    assert set(plan.pending) and not set(done.members) & set(plan.pending)
    assert _ledger(conn) == (plan.watermark, plan.pending)
    nxt = Rem(RemConfig(max_summaries=1)).plan(conn, now + DAY)
    (again,) = [op for op in nxt.ops if isinstance(op, SummarizeCluster)]
    assert set(again.members) <= set(plan.pending)


def test_the_daemon_runs_rem_incrementally_through_its_plan_worker(short_tmp: Path) -> None:
    with Daemon(short_tmp) as d, d.client() as c:
        texts = [
            f"The {s} cache is flushed every {n} minutes."
            for s, n in [("billing", 5), ("search", 7), ("export", 9), ("ledger", 11)]
        ]
        for t in texts:
            c.remember(t, kind="fact")
        copy = c.remember(texts[0].lower(), kind="fact").id
        wait_indexed(c)
        first: DreamsRunResult = c.call(DreamsRun(phase="rem"))
        assert first.report.counts.get("merge_duplicates") == 1
        assert "compared 5 changed of 5 active" in first.report.notes
        second: DreamsRunResult = c.call(DreamsRun(phase="rem"))
        # The survivor's provenance changed in the first run: it alone is compared.
        assert "compared 1 changed of 4 active" in second.report.notes, second.report.notes
        late = c.remember(texts[2] + " Again.", kind="fact").id
        wait_indexed(c)
        third: DreamsRunResult = c.call(DreamsRun(phase="rem"))
        assert "compared 1 changed of 5 active" in third.report.notes, third.report.notes
        assert third.report.counts.get("merge_duplicates") == 1
        log = d.log_path.read_text()
    assert "in=process" in log  # planned by the worker: the watermark crossed over
    conn = open_connection(d.data_dir / "reverie.db", readonly=True)
    try:
        rows = conn.execute(
            "SELECT watermark FROM dream_runs WHERE phase = 'rem' ORDER BY id"
        ).fetchall()
        late_state = conn.execute("SELECT state FROM memories WHERE id = ?", (late,)).get
        copy_state = conn.execute("SELECT state FROM memories WHERE id = ?", (copy,)).get
    finally:
        conn.close()
    marks = [r[0] for r in rows]
    assert len(marks) == 3 and all(m is not None for m in marks)
    assert marks[0] < marks[1] < marks[2]  # each read a store written since the last
    assert (late_state, copy_state) == ("superseded", "superseded")
