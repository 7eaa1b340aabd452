"""Light sleep on a real SQLite store: scores, candidates, session summaries, undo."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
from dream_store import DAY, dump, memory_state, open_db, populate, reader, remember, seqs
from reverie.phases import ledger
from reverie.phases.light import LightConfig, LightSleep, score
from reverie.phases.ops import CreateSummary, SetMeta
from reverie.phases.runner import apply_plan, transact_on
from reverie.phases.undo import undo
from reverie.store import search

QUERIES = ("deploy arm64", "uploader retry", "Postgres", "config loader", "Dockerfile edit")


def _searches(tmp_path: Path) -> list[list[tuple[int, float]]]:
    conn = reader(tmp_path)
    try:
        return [
            [
                (h.memory.id, round(h.score, 9))
                for h in search.search(conn, q, workspace=None, limit=10)
            ]
            for q in QUERIES
        ]
    finally:
        conn.close()


def test_plan_is_deterministic_and_read_only(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    populate(conn, now)
    before = dump(conn)
    phase = LightSleep()
    plan = phase.plan(conn, now)
    rconn = reader(tmp_path)  # the daemon plans on a reader connection
    again = LightSleep().plan(rconn, now)
    rconn.close()
    assert msgspec.json.encode(plan) == msgspec.json.encode(again)
    assert dump(conn) == before  # a dry run writes nothing...
    assert not (tmp_path / ledger.LEDGER_FILENAME).exists()  # ...not even the ledger
    assert plan.phase == "light-sleep" and plan.items == 14


def test_plan_scores_marks_candidates_and_summarizes_finished_sessions(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    ids = populate(conn, now)
    plan = LightSleep().plan(conn, now)
    marks = {op.memory_id: op.value for op in plan.ops if isinstance(op, SetMeta)}
    assert len(marks) == 14  # first run: every active memory gets its score
    assert marks[ids["popular"]]["candidate"] == "promote"
    assert marks[ids["old_note"]]["candidate"] == "archive"
    assert marks[ids["old_decision"]]["candidate"] is None  # protected kind
    assert marks[ids["fresh_fact"]]["candidate"] is None
    assert marks[ids["popular"]]["score"] > marks[ids["fresh_fact"]]["score"]
    assert marks[ids["fresh_fact"]]["score"] > marks[ids["old_note"]]["score"]

    summaries = [op for op in plan.ops if isinstance(op, CreateSummary)]
    assert [op.sources for op in summaries] == [ids["s1"], ids["s2"]]  # s3 is still going
    s1 = summaries[0].content
    assert s1.startswith("Session s1 (claude-code): 5 observations")
    assert "Asked: why does the deploy fail on arm64?" in s1
    assert "Tools: Bash (2), Edit (1)" in s1
    assert "Failures: Bash failed: docker buildx → no matching manifest for arm64" in s1
    assert "Outcome: the base image had no arm64 variant" in s1
    assert len(s1) <= LightConfig().summary_budget_chars
    short = LightSleep(LightConfig(summary_budget_chars=80)).plan(conn, now)
    assert all(len(op.content) <= 80 for op in short.ops if isinstance(op, CreateSummary))


def test_score_formula() -> None:
    cfg = LightConfig()
    now = 1_000_000_000.0
    fresh = score(cfg, now, ("fact", 0.5, now, None, 0, 0))
    half = score(cfg, now, ("fact", 0.5, now - cfg.half_life_days * DAY, None, 0, 0))
    # recency halves after one half-life: the difference is w_recency/2 (x kind weight)
    weights = cfg.w_recency + cfg.w_recall + cfg.w_queries + cfg.w_importance
    assert abs((fresh - half) - 0.5 * cfg.w_recency / weights * 1.1) < 1e-9
    recalled = score(cfg, now, ("fact", 0.5, now - 100 * DAY, now, 0, 0))
    assert recalled == fresh  # a recall refreshes recency
    assert score(cfg, now, ("observation", 0.5, now, None, 0, 0)) < fresh
    assert score(cfg, now, ("fact", 1.0, now, None, 50, 50)) == 1.0


def test_apply_then_undo_restores_the_store_and_searches(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    ids = populate(conn, now)
    before = memory_state(conn)
    seq_before = seqs(conn)
    searches_before = _searches(tmp_path)

    plan = LightSleep().plan(conn, now)
    report = apply_plan(plan, transact=transact_on(conn), data_dir=tmp_path, batch=4)
    assert report.status == "completed"
    assert report.counts == {"set_meta": 14, "create_summary": 2}
    new = {m: r for m, r in memory_state(conn).items() if m not in before}
    assert len(new) == 2
    for mid, row in new.items():
        assert row[3] == "summary" and row[8] == "active"
        prov = json.loads(row[10])
        assert prov["memories"] in (ids["s1"], ids["s2"])
        for src in prov["memories"]:  # every source stays reachable and is marked
            meta = json.loads(
                conn.execute("SELECT metadata FROM memories WHERE id = ?", (src,)).get
            )
            assert meta["summarized_by"] == mid
        assert prov["events"] == [src + 1000 for src in prov["memories"]]
    assert _searches(tmp_path)[0] != searches_before[0]  # the s1 summary now matches

    # The next run has nothing left to summarize and only scores the new summaries.
    plan2 = LightSleep().plan(conn, now)
    assert not [op for op in plan2.ops if isinstance(op, CreateSummary)]
    assert sorted(op.memory_id for op in plan2.ops if isinstance(op, SetMeta)) == sorted(new)

    result = undo(report.run_id, transact=transact_on(conn), data_dir=tmp_path)
    assert (result.reversed, result.conflicts) == (16, 0)
    after = memory_state(conn)
    assert {m: r for m, r in after.items() if m in before} == before
    for mid in new:  # created summaries are purged: a tombstone without text
        assert after[mid][8] == "forgotten" and after[mid][4] == "" and after[mid][5] == "[]"
    seq_after = seqs(conn)
    assert all(seq_after[m][0] > seq_before[m][0] for m in before)  # the indexer sees undo
    assert _searches(tmp_path) == searches_before
    assert [x["event"] for x in ledger.read_lines(tmp_path)] == ["run", "undo"]

    # After undo the sessions are due again, and the plan is the first one.
    assert msgspec.json.encode(LightSleep().plan(conn, now)) == msgspec.json.encode(plan)


def test_quiet_store_plans_nothing(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    populate(conn, now)
    apply_plan(LightSleep().plan(conn, now), transact=transact_on(conn))
    apply_plan(LightSleep().plan(conn, now), transact=transact_on(conn))  # scores the summaries
    before = dump(conn)
    plan = LightSleep().plan(conn, now + 60)
    assert plan.ops == [] and plan.items == 16
    report = apply_plan(plan, transact=transact_on(conn), data_dir=tmp_path)
    assert report.counts == {} and report.status == "completed"
    assert dump(conn)["memories"] == before["memories"]


def test_summarized_observations_become_archive_candidates(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    ids = populate(conn, now)
    apply_plan(LightSleep().plan(conn, now), transact=transact_on(conn))
    later = now + 8 * DAY
    plan = LightSleep().plan(conn, later)
    marks = {op.memory_id: op.value for op in plan.ops if isinstance(op, SetMeta)}
    for mid in ids["s1"]:
        assert marks[mid]["candidate"] == "archive"
        assert "session summary" in marks[mid]["reason"]
    # s3 went quiet meanwhile and is summarized now.
    summaries = [op for op in plan.ops if isinstance(op, CreateSummary)]
    assert [op.sources for op in summaries] == [ids["s3"]]


def test_pinned_memories_are_never_archive_candidates(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    pinned = remember(
        conn,
        "An old pinned note",
        now - 300 * DAY,
        kind="fact",
        importance=0.0,
        metadata={"pinned": True},
    )
    plain = remember(conn, "An old plain note", now - 300 * DAY, kind="fact", importance=0.0)
    plan = LightSleep().plan(conn, now)
    marks = {op.memory_id: op.value for op in plan.ops if isinstance(op, SetMeta)}
    assert marks[pinned]["candidate"] is None and marks[plain]["candidate"] == "archive"


def test_imported_history_is_not_stale_until_it_ages_in_the_store(tmp_path: Path) -> None:
    # An old chat log imported today: its events are 300 days old, but it
    # entered the store now and nobody had a chance to recall it yet.
    conn = open_db(tmp_path)
    now = time.time()
    old = now - 300 * DAY
    imported = remember(conn, "An imported note", old, entered=now, kind="fact", importance=0.0)
    native = remember(conn, "A native old note", old, kind="fact", importance=0.0)
    cfg = LightConfig()

    def marks(at: float) -> dict[int, Any]:
        plan = LightSleep(cfg).plan(conn, at)
        return {op.memory_id: op.value for op in plan.ops if isinstance(op, SetMeta)}

    first = marks(now)
    assert first[imported]["candidate"] is None and first[native]["candidate"] == "archive"
    # Recency still reads observed_at: the old event scores low either way.
    assert first[imported]["score"] == first[native]["score"]
    # Unrecalled in the store for archive_min_age_days: now it is stale.
    assert marks(now + cfg.archive_min_age_days * DAY)[imported]["candidate"] == "archive"
