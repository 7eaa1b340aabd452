"""Deep sleep: promotion at its thresholds, archiving (never protected or pinned), purge,
maintenance, apply + undo on a real SQLite store, and a run through the real daemon."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from dream_store import DAY, dump, found, memory_state, open_db, reader, remember
from harness import Daemon
from reverie.phases import ledger
from reverie.phases.deep import DeepConfig, DeepSleep, checkpoint_on
from reverie.phases.light import LightConfig, LightSleep, score
from reverie.phases.ops import SetTier
from reverie.phases.runner import apply_plan, transact_on
from reverie.phases.undo import undo
from reverie.rpc.proto_dreams import DreamsRun, DreamsRunResult, DreamsUndo, UndoReport
from reverie.rpc.proto_versions import Update
from reverie.rpc.protocol import MemoryRecord
from reverie.store import memories, versions


def _stats(conn: Any, mid: int, *, recalls: int, queries: int, at: float | None = None) -> None:
    with conn:
        conn.execute(
            "UPDATE memories SET recall_count = ?, distinct_queries = ?, last_recalled_at = ? "
            "WHERE id = ?",
            (recalls, queries, at, mid),
        )


def _tiers(conn: Any) -> dict[int, str]:
    return {int(i): str(t) for i, t in conn.execute("SELECT id, tier FROM memories")}


def _moves(plan: Any) -> dict[int, str]:
    return {op.memory_id: op.to_tier for op in plan.ops if isinstance(op, SetTier)}


def _store(conn: Any, now: float) -> dict[str, int]:
    """Memories on each side of each threshold, with known ground truth."""
    ids: dict[str, int] = {}
    # Fresh, important, recalled 3x by 3 distinct queries: earned long-term.
    ids["earned"] = remember(
        conn, "Deploys go through tools/deploy.sh", now, kind="fact", importance=0.9
    )
    _stats(conn, ids["earned"], recalls=3, queries=3, at=now)
    # The same, one distinct query short.
    ids["few_queries"] = remember(
        conn, "Logs live in /var/log/app", now, kind="fact", importance=0.9
    )
    _stats(conn, ids["few_queries"], recalls=3, queries=2, at=now)
    # One recall short.
    ids["few_recalls"] = remember(conn, "CI runs on buildkite", now, kind="fact", importance=0.9)
    _stats(conn, ids["few_recalls"], recalls=2, queries=2, at=now)
    # Recalled a lot, long ago: its score is too low.
    ids["faded"] = remember(
        conn, "The old wiki was on confluence", now - 120 * DAY, kind="fact", importance=0.2
    )
    _stats(conn, ids["faded"], recalls=5, queries=5, at=now - 120 * DAY)
    # Already long-term: never "promoted" again.
    ids["long"] = remember(
        conn, "Prod DB is postgres 16", now, kind="fact", importance=0.9, tier="long"
    )
    _stats(conn, ids["long"], recalls=9, queries=9, at=now)
    # Stale and worthless: archived by score and age, marks or not.
    ids["stale"] = remember(
        conn, "Lunch order for the offsite was pizza", now - 200 * DAY, kind="fact", importance=0.0
    )
    # Stale, but protected kinds and a pinned memory: never archived.
    ids["decision"] = remember(
        conn, "We chose Postgres over MySQL", now - 400 * DAY, kind="decision", importance=0.0
    )
    ids["preference"] = remember(
        conn, "Tabs over spaces, always", now - 400 * DAY, kind="preference", importance=0.0
    )
    ids["procedure"] = remember(
        conn, "Rotate keys with vault rotate", now - 400 * DAY, kind="procedure", importance=0.0
    )
    ids["pinned"] = remember(
        conn,
        "The pinned oncall runbook link",
        now - 400 * DAY,
        kind="fact",
        importance=0.0,
        metadata={"pinned": True},
    )
    # Young and worthless: not archived yet (age below archive_min_age_days).
    ids["young"] = remember(
        conn, "A throwaway note from last week", now - 10 * DAY, kind="fact", importance=0.0
    )
    return ids


def test_promotion_thresholds_at_their_edges(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    ids = _store(conn, now)
    cfg = DeepConfig()
    light = LightConfig()
    row = conn.execute(
        "SELECT kind, importance, observed_at, last_recalled_at, recall_count, distinct_queries "
        "FROM memories WHERE id = ?",
        (ids["earned"],),
    ).fetchone()
    s = score(light, now, tuple(row))
    assert s >= cfg.promote_min_score
    moves = _moves(DeepSleep(cfg).plan(conn, now))
    assert moves[ids["earned"]] == "long"
    for name in ("few_queries", "few_recalls", "faded", "long", "young"):
        assert ids[name] not in moves, name
    # Exactly at each threshold promotes; a hair above does not.
    at_edge = DeepConfig(promote_min_score=s, promote_min_recalls=3, promote_min_queries=3)
    assert _moves(DeepSleep(at_edge).plan(conn, now))[ids["earned"]] == "long"
    for over in (
        DeepConfig(promote_min_score=s + 1e-6),
        DeepConfig(promote_min_recalls=4),
        DeepConfig(promote_min_queries=4),
    ):
        assert ids["earned"] not in _moves(DeepSleep(over).plan(conn, now))
    looser = _moves(DeepSleep(DeepConfig(promote_min_queries=2)).plan(conn, now))
    assert looser[ids["few_queries"]] == "long" and ids["few_recalls"] not in looser


def test_archiving_spares_protected_kinds_and_pinned(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    ids = _store(conn, now)
    moves = _moves(DeepSleep().plan(conn, now))
    assert moves[ids["stale"]] == "archived"
    for name in ("decision", "preference", "procedure", "pinned", "young"):
        assert ids[name] not in moves, name
    # Even with every threshold wide open, protected and pinned memories stay.
    wide = DeepConfig(archive_max_score=1.1, archive_min_age_days=0, archive_grace_days=0)
    moves = _moves(DeepSleep(wide).plan(conn, now))
    for name in ("decision", "preference", "procedure", "pinned"):
        assert ids[name] not in moves, name
    assert moves[ids["young"]] == "archived"


def test_light_sleep_archive_marks_after_the_grace_period(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    # 40 days: light sleep marks it (30 d), deep sleep's own score rule waits for 60 d.
    mid = remember(conn, "A forty day old note", now - 40 * DAY, kind="fact", importance=0.0)
    assert _moves(DeepSleep().plan(conn, now)) == {}
    apply_plan(LightSleep().plan(conn, now), transact=transact_on(conn))
    meta = json.loads(conn.execute("SELECT metadata FROM memories WHERE id = ?", (mid,)).get)
    assert meta["dream"]["candidate"] == "archive"
    assert _moves(DeepSleep().plan(conn, now)) == {mid: "archived"}
    assert _moves(DeepSleep(DeepConfig(archive_grace_days=41)).plan(conn, now)) == {}
    # A recall after the mark resets its age: kept, although still marked.
    _stats(conn, mid, recalls=1, queries=1, at=now - DAY)
    assert _moves(DeepSleep().plan(conn, now)) == {}


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    _store(conn, now)
    before = dump(conn)
    plan = DeepSleep().plan(conn, now)
    rconn = reader(tmp_path)  # the daemon plans on a reader connection
    assert DeepSleep().plan(rconn, now) == plan
    rconn.close()
    assert plan.counts() == {"set_tier": 2} and plan.items == 11
    assert "1 to promote, 1 to archive" in plan.notes
    assert dump(conn) == before
    assert not (tmp_path / ledger.LEDGER_FILENAME).exists()


def test_apply_then_undo_round_trip_and_search(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    ids = _store(conn, now)
    before = memory_state(conn)
    assert ids["stale"] in found(tmp_path, "lunch offsite pizza")

    plan = DeepSleep().plan(conn, now)
    report = apply_plan(
        plan,
        transact=transact_on(conn),
        data_dir=tmp_path,
        after=DeepSleep().maintenance(now, checkpoint_on(conn)),
    )
    assert report.status == "completed" and report.counts == {"set_tier": 2}, report
    assert "FTS and PRAGMA optimize done" in report.notes and "WAL checkpointed" in report.notes
    tiers = _tiers(conn)
    assert tiers[ids["earned"]] == "long" and tiers[ids["stale"]] == "archived"
    assert ids["stale"] not in found(tmp_path, "lunch offsite pizza")  # search hides archived
    assert ids["earned"] in found(tmp_path, "deploy")  # long-term stays searchable
    assert DeepSleep().plan(conn, now).ops == []  # a second run has nothing left to do

    result = undo(report.run_id, transact=transact_on(conn), data_dir=tmp_path)
    assert (result.reversed, result.conflicts) == (2, 0)
    assert memory_state(conn) == before
    assert ids["stale"] in found(tmp_path, "lunch offsite pizza")
    assert [x["event"] for x in ledger.read_lines(tmp_path)] == ["run", "undo"]


def test_purge_erases_old_tombstones_only_and_is_not_undone(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    old = remember(conn, "An old secret plan", now - 200 * DAY, kind="fact")
    recent = remember(conn, "A recent forgotten plan", now - 200 * DAY, kind="fact")
    with conn:  # memory versions: each has an earlier version, which the purge erases too
        for mid in (old, recent):
            versions.update(conn, Update(memory_id=mid, importance=0.7))
        memories.forget(conn, old, purge=False, reason="test")
        memories.forget(conn, recent, purge=False, reason="test")
        conn.execute(
            "UPDATE memories SET metadata = json_set(metadata, '$.forgotten.at', ?) WHERE id = ?",
            (now - 91 * DAY, old),
        )
    plan = DeepSleep().plan(conn, now)
    assert "purge 1 forgotten tombstones older than 90 days" in plan.notes
    report = apply_plan(plan, transact=transact_on(conn), after=DeepSleep().maintenance(now, None))
    assert "purged 1 forgotten tombstones" in report.notes
    rows = dict(conn.execute("SELECT id, content FROM memories").fetchall())
    assert rows[old] == "" and rows[recent] == "A recent forgotten plan"
    kept = conn.execute("SELECT memory_id FROM memory_versions").fetchall()
    assert kept == [(recent,)]
    undo(report.run_id, transact=transact_on(conn))
    assert conn.execute("SELECT content FROM memories WHERE id = ?", (old,)).get == ""
    off = DeepSleep(DeepConfig(purge_forgotten_after_days=0)).plan(conn, now + 400 * DAY)
    assert "purge 0 forgotten" in off.notes


def _record(uid: str, content: str, age_days: float, **kw: Any) -> MemoryRecord:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(days=age_days)
    return MemoryRecord(
        uid=uid,
        workspace="default",
        content=content,
        created_at=at,
        observed_at=at,
        updated_at=at,
        **kw,
    )


def test_daemon_dry_run_run_undo(short_tmp: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    records = [
        _record(
            "earned",
            "Deploys go through tools/deploy.sh",
            0,
            kind="fact",
            importance=0.9,
            recall_count=4,
            distinct_queries=3,
            last_recalled_at=now,
        ),
        _record("stale", "Lunch order for the offsite was pizza", 200, kind="fact", importance=0.0),
        _record("decision", "We chose Postgres over MySQL", 400, kind="decision", importance=0.0),
        _record(
            "pinned",
            "The pinned oncall runbook",
            400,
            kind="fact",
            importance=0.0,
            metadata={"pinned": True},
        ),
    ]
    # Lexical search only: vector neighbours would make the hit lists depend on
    # when the indexer caught up. No recalls: the search below would recall the
    # stale memory once its recall is flushed (when the daemon is quiet), and the
    # real run, planned a moment after the dry one, would then keep it.
    cfg = "[index]\nenabled = false\n[search]\nrecord_recalls = false\n"
    with Daemon(short_tmp, config=cfg) as d, d.client() as c:
        c.import_records(records)
        by_uid = {r.uid: r for r in c.export(include_forgotten=False)}
        assert all(r.tier == "short" for r in by_uid.values())
        assert [h.memory.uid for h in c.search("lunch pizza").hits] == ["stale"]

        dry: DreamsRunResult = c.call(DreamsRun(phase="deepSleep", dry_run=True))
        assert dry.plan is not None and dry.report is None
        assert dry.plan.phase == "deep-sleep" and dry.plan.counts == {"set_tier": 2}
        assert {op["to_tier"] for op in dry.plan.ops} == {"long", "archived"}
        assert {r.uid: r.tier for r in c.export(include_forgotten=False)} == {
            u: "short" for u in by_uid
        }
        assert not (d.data_dir / ledger.LEDGER_FILENAME).exists()

        res: DreamsRunResult = c.call(DreamsRun(phase="deep-sleep"))
        assert res.report is not None and res.report.status == "completed", res
        assert res.report.counts == {"set_tier": 2}
        assert "WAL checkpointed and truncated" in res.report.notes, res.report.notes
        tiers = {r.uid: r.tier for r in c.export(include_forgotten=False)}
        assert tiers == {
            "earned": "long",
            "stale": "archived",
            "decision": "short",
            "pinned": "short",
        }
        assert c.search("lunch pizza").hits == []

        undone: UndoReport = c.call(DreamsUndo(run_id=res.report.run_id))
        assert (undone.reversed, undone.conflicts) == (2, 0)
        assert {r.uid: r.tier for r in c.export(include_forgotten=False)} == {
            u: "short" for u in by_uid
        }
        assert [h.memory.uid for h in c.search("lunch pizza").hits] == ["stale"]


def test_imported_history_is_archived_by_store_age_not_event_age(tmp_path: Path) -> None:
    # A 2023 chat log imported today (LoCoMo's case): observed 400 days ago,
    # entered the store now. Archiving it on observed_at would hide the whole
    # history from search before its first query.
    conn = open_db(tmp_path)
    now = time.time()
    old = now - 400 * DAY
    mid = remember(conn, "Caroline said, hi", old, entered=now, kind="fact", importance=0.0)
    cfg = DeepConfig()
    assert _moves(DeepSleep(cfg).plan(conn, now)) == {}
    # Light sleep does not mark it either, so the grace rule cannot fire early.
    apply_plan(LightSleep().plan(conn, now), transact=transact_on(conn))
    assert _moves(DeepSleep(cfg).plan(conn, now + cfg.archive_grace_days * DAY)) == {}
    # Unrecalled in the store for archive_min_age_days: stale now.
    late = now + cfg.archive_min_age_days * DAY
    assert _moves(DeepSleep(cfg).plan(conn, late)) == {mid: "archived"}
    # A recall since entering resets the age (the newer of created and recalled).
    _stats(conn, mid, recalls=1, queries=1, at=late - DAY)
    assert _moves(DeepSleep(cfg).plan(conn, late)) == {}
