"""The plan/apply frame, the ledger and undo, on a real SQLite store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import apsw
import msgspec
import pytest
from dream_store import DAY, memory_state, open_db, remember, seqs
from reverie.errors import Conflict, InvalidParams, NotFound
from reverie.phases import ledger
from reverie.phases.ops import SetMeta, SetTier
from reverie.phases.runner import Plan, apply_plan, transact_on
from reverie.phases.undo import undo


def _store(tmp_path: Path) -> tuple[apsw.Connection, list[int]]:
    conn = open_db(tmp_path)
    now = time.time()
    ids = [
        remember(conn, f"memory number {i} about topic {i % 3}", now - i * DAY) for i in range(7)
    ]
    return conn, ids


def _tier_plan(ids: list[int]) -> Plan:
    ops: list[SetTier | SetMeta] = [
        SetTier(memory_id=m, from_tier="short", to_tier="long") for m in ids
    ]
    ops.append(SetMeta(memory_id=ids[0], key="note", value={"x": 1}))
    return Plan(phase="deep-sleep", ops=list(ops), items=len(ids), notes="test plan")


def test_batch_size_is_asked_before_each_batch(tmp_path: Path) -> None:
    """The daemon's runs shrink their transactions while clients are served."""
    conn, ids = _store(tmp_path)
    sizes = iter([3, 1, 0, 10])  # 0 is taken as 1: a run always moves on
    chunks: list[int] = []
    plain = transact_on(conn)

    def transact(fn):  # type: ignore[no-untyped-def]
        before = len(ledger.run_ops(conn, run)) if (run := _open_run(conn)) else 0
        value = plain(fn)
        if run:
            chunks.append(len(ledger.run_ops(conn, run)) - before)
        return value

    report = apply_plan(_tier_plan(ids), transact=transact, batch=lambda: next(sizes))
    assert report.status == "completed" and report.counts == {"set_tier": 7, "set_meta": 1}
    assert [c for c in chunks if c] == [3, 1, 1, 3]


def _open_run(conn: apsw.Connection) -> int | None:
    row = conn.execute("SELECT max(id) FROM dream_runs WHERE status = 'running'").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def test_apply_records_run_ops_and_ledger_line(tmp_path: Path) -> None:
    conn, ids = _store(tmp_path)
    report = apply_plan(
        _tier_plan(ids),
        transact=transact_on(conn),
        trigger="scheduled",
        data_dir=tmp_path,
        batch=3,
    )
    assert report.status == "completed" and report.errors == []
    assert report.counts == {"set_tier": 7, "set_meta": 1}
    assert report.planned == 8 and report.items_processed == 7
    tiers = {m: t for m, t in conn.execute("SELECT id, tier FROM memories")}
    assert all(tiers[m] == "long" for m in ids)

    run = ledger.get_run(conn, report.run_id)
    assert (run.phase, run.trigger, run.status) == ("deep-sleep", "scheduled", "completed")
    assert run.counts == {"set_tier": 7, "set_meta": 1} and run.items_processed == 7
    assert run.completed_at is not None and run.completed_at >= run.started_at
    assert run.duration_ms is not None and run.duration_ms >= 0
    ops = ledger.run_ops(conn, report.run_id)
    assert [s for s, _, _ in ops] == list(range(1, 9))
    assert ops[0][1] == "set_tier" and ops[0][2]["before"] == {"tier": "short"}
    row = conn.execute("SELECT before_ids, after_ids FROM dream_ops WHERE seq = 1").fetchone()
    assert json.loads(row[0]) == [ids[0]] and json.loads(row[1]) == [ids[0]]

    lines = ledger.read_lines(tmp_path)
    assert len(lines) == 1
    line = lines[0]
    assert line["schemaVersion"] == 1 and line["dryRun"] is False
    assert line["phase"] == "deep-sleep" and line["trigger"] == "scheduled"
    assert line["runId"] == report.run_id and line["itemsProcessed"] == 7
    assert line["counts"] == {"set_tier": 7, "set_meta": 1}
    assert line["startedAt"].endswith("Z") and line["completedAt"].endswith("Z")
    assert line["durationMs"] == run.duration_ms and line["notes"] == "test plan"
    assert line["errors"] == []
    assert oct((tmp_path / ledger.LEDGER_FILENAME).stat().st_mode & 0o777) == "0o600"


def test_stale_ops_are_skipped_not_forced(tmp_path: Path) -> None:
    conn, ids = _store(tmp_path)
    with conn:
        conn.execute("UPDATE memories SET tier = 'archived' WHERE id = ?", (ids[1],))
        conn.execute("UPDATE memories SET state = 'forgotten' WHERE id = ?", (ids[2],))
    report = apply_plan(_tier_plan(ids), transact=transact_on(conn))
    assert report.counts == {"set_tier": 5, "set_meta": 1, "skipped": 2}
    assert conn.execute("SELECT tier FROM memories WHERE id = ?", (ids[1],)).get == "archived"
    assert conn.execute("SELECT tier FROM memories WHERE id = ?", (ids[2],)).get == "short"


def test_failed_check_stops_before_commit(tmp_path: Path) -> None:
    conn, ids = _store(tmp_path)
    before = memory_state(conn)
    calls = []

    def check(c: apsw.Connection) -> bool:
        calls.append(1)
        return len(calls) < 2  # the lock is lost during the second batch

    report = apply_plan(
        _tier_plan(ids), transact=transact_on(conn), check=check, data_dir=tmp_path, batch=3
    )
    assert report.status == "failed" and "lost the phase lock" in report.errors[0]
    assert report.counts == {"set_tier": 3}  # the first batch only
    after = memory_state(conn)
    assert [after[m][7] for m in ids] == ["long"] * 3 + ["short"] * 4
    assert len(ledger.run_ops(conn, report.run_id)) == 3
    run = ledger.get_run(conn, report.run_id)
    assert run.status == "failed" and run.errors == report.errors
    assert ledger.read_lines(tmp_path)[0]["status"] == "failed"

    # A partial run undoes like any other.
    undo(report.run_id, transact=transact_on(conn), data_dir=tmp_path)
    assert {m: r[7] for m, r in memory_state(conn).items()} == {m: r[7] for m, r in before.items()}


def test_check_false_on_first_batch_changes_no_memory(tmp_path: Path) -> None:
    conn, ids = _store(tmp_path)
    before = memory_state(conn)
    report = apply_plan(_tier_plan(ids), transact=transact_on(conn), check=lambda c: False)
    assert report.status == "failed" and report.counts == {}
    assert memory_state(conn) == before
    assert conn.execute("SELECT count(*) FROM dream_ops").get == 0


def test_undo_restores_exactly_and_only_once(tmp_path: Path) -> None:
    conn, ids = _store(tmp_path)
    before = memory_state(conn)
    seq_before = seqs(conn)
    report = apply_plan(_tier_plan(ids), transact=transact_on(conn), data_dir=tmp_path)
    assert memory_state(conn) != before

    result = undo(report.run_id, transact=transact_on(conn), data_dir=tmp_path)
    assert (result.reversed, result.conflicts) == (8, 0)
    assert memory_state(conn) == before
    seq_after = seqs(conn)
    for m in ids:  # every change moved seq and updated_at forward, undo included
        assert seq_after[m][0] > seq_before[m][0]
        assert seq_after[m][1] >= seq_before[m][1]
    run = ledger.get_run(conn, report.run_id)
    assert run.status == "undone" and run.undone_at is not None
    lines = ledger.read_lines(tmp_path)
    assert [x["event"] for x in lines] == ["run", "undo"]
    assert lines[1]["runId"] == report.run_id and lines[1]["counts"] == {
        "reversed": 8,
        "conflicts": 0,
    }

    with pytest.raises(Conflict, match="already undone"):
        undo(report.run_id, transact=transact_on(conn), data_dir=tmp_path)
    with pytest.raises(NotFound):
        undo(9999, transact=transact_on(conn))
    assert len(ledger.read_lines(tmp_path)) == 2


def test_undo_leaves_later_changes_alone(tmp_path: Path) -> None:
    conn, ids = _store(tmp_path)
    report = apply_plan(_tier_plan(ids), transact=transact_on(conn))
    with conn:  # a later change to one memory, after the run
        conn.execute("UPDATE memories SET tier = 'archived' WHERE id = ?", (ids[3],))
    result = undo(report.run_id, transact=transact_on(conn))
    assert (result.reversed, result.conflicts) == (7, 1)
    assert conn.execute("SELECT tier FROM memories WHERE id = ?", (ids[3],)).get == "archived"
    assert conn.execute("SELECT tier FROM memories WHERE id = ?", (ids[4],)).get == "short"


def test_running_run_cannot_be_undone(tmp_path: Path) -> None:
    conn, _ = _store(tmp_path)
    with conn:
        run_id = ledger.start_run(conn, "rem", "manual", time.time())
    with pytest.raises(Conflict, match="still running"):
        undo(run_id, transact=transact_on(conn))


def test_recent_runs_per_phase_and_names(tmp_path: Path) -> None:
    conn, _ = _store(tmp_path)
    t = iter(range(1000, 2000, 10))
    for phase in ("light-sleep", "rem", "light-sleep"):
        plan = Plan(phase=phase, ops=[], items=0)
        apply_plan(plan, transact=transact_on(conn), clock=lambda: float(next(t)))
    light = ledger.recent_runs(conn, phase="lightSleep")
    assert [r.phase for r in light] == ["light-sleep"] * 2
    assert light[0].started_at > light[1].started_at
    assert [r.phase for r in ledger.recent_runs(conn, since=1015.0)] == ["light-sleep", "rem"]
    assert set(ledger.last_runs(conn)) == {"light-sleep", "rem"}
    assert ledger.normalize_phase("deepSleep") == "deep-sleep"
    with pytest.raises(InvalidParams, match="unknown phase"):
        ledger.normalize_phase("nap")


def test_plan_is_wire_encodable(tmp_path: Path) -> None:
    _, ids = _store(tmp_path)
    plan = _tier_plan(ids)
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(plan), type=Plan)
    assert back == plan and back.counts() == {"set_tier": 7, "set_meta": 1}
