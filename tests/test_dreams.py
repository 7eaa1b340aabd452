"""Dreaming in the real daemon: run, dry-run, undo and status over RPC and the CLI, and a crash."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw
import pytest
from dream_store import dump
from harness import Daemon, record
from reverie.errors import Conflict, InvalidParams
from reverie.phases import ledger
from reverie.rpc.client import Client
from reverie.rpc.proto_dreams import (
    DreamsRun,
    DreamsRunResult,
    DreamsStatus,
    DreamsStatusResult,
    DreamsUndo,
    UndoReport,
)
from reverie.rpc.protocol import MemoryRecord
from reverie.store.connection import open_connection

SESSION = [
    ("UserPromptSubmit", "User: why does the deploy fail on arm64?"),
    ("PostToolUse", "Bash: make deploy → exit 2"),
    ("PostToolUseFailure", "Bash failed: docker buildx → no matching manifest for arm64"),
    ("PostToolUse", "Edit: Dockerfile → use a multi-arch base image"),
    ("SessionEnd", "Session ended: prompt_input_exit"),
]
QUERIES = ("deploy arm64", "Dockerfile multi-arch", "Postgres pool")
DREAMS_ON = '[dreams]\npreset = "core"\njitter_s = 0\nlock_ttl_s = 30\n'


def _observe(c: Client, session: str = "s1") -> list[int]:
    ids = []
    for i, (event, text) in enumerate(SESSION):
        r = c.remember(
            f"{text} ({session})",
            kind="observation",
            tags=[f"event:{event}"],
            metadata={"session_id": session, "event": event, "harness": "claude-code"},
            observed_at=None,
        )
        ids.append(r.id)
        assert r.created, i
    c.remember("The team prefers Postgres connection pools of 10", kind="preference")
    return ids


def _db_dump(d: Daemon) -> dict[str, list[tuple[Any, ...]]]:
    conn = open_connection(d.data_dir / "reverie.db", readonly=True)
    try:
        return dump(conn)
    finally:
        conn.close()


def _export(c: Client) -> list[MemoryRecord]:
    return list(c.export(include_forgotten=False))


def _view(records: list[MemoryRecord]) -> list[tuple[Any, ...]]:
    # What a reader sees of each memory; updated_at moves on undo by design.
    return [
        (r.uid, r.kind, r.content, r.tier, r.state, json.dumps(r.metadata, sort_keys=True))
        for r in records
    ]


def _searches(c: Client) -> list[list[tuple[int, str]]]:
    return [[(h.memory.id, h.memory.content) for h in c.search(q, limit=10).hits] for q in QUERIES]


def _cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reverie", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=d.environ(),
    )


def test_dry_run_run_status_undo(short_tmp: Path) -> None:
    # Without the vector index: it stores vectors in the background, which a
    # byte-for-byte comparison of the database would take for the dry run's.
    config = DREAMS_ON + "[index]\nenabled = false\n"
    with Daemon(short_tmp, config=config) as d, d.client() as c:
        sources = _observe(c)
        assert d.data_dir.joinpath("reverie.db").exists()

        # Dry run: the plan, and not one byte of the database changes.
        before_db = _db_dump(d)
        dry: DreamsRunResult = c.call(DreamsRun(phase="lightSleep", dry_run=True))
        assert dry.report is None and dry.plan is not None
        assert dry.plan.phase == "light-sleep" and dry.plan.items == len(sources) + 1
        summaries = [op for op in dry.plan.ops if op["type"] == "create_summary"]
        assert len(summaries) == 1 and summaries[0]["sources"] == sources
        assert dry.plan.counts["create_summary"] == 1
        assert _db_dump(d) == before_db
        assert not (d.data_dir / ledger.LEDGER_FILENAME).exists()

        before = _export(c)
        before_search = _searches(c)

        # A real run: a summary memory with provenance, a ledger row and line.
        res: DreamsRunResult = c.call(DreamsRun(phase="light-sleep"))
        assert res.plan is None and res.report is not None
        rep = res.report
        assert rep.status == "completed" and rep.trigger == "manual", rep
        assert rep.counts["create_summary"] == 1 and rep.planned == len(dry.plan.ops)
        after = _export(c)
        made = [r for r in after if r.kind == "summary"]
        assert len(made) == 1 and "arm64" in made[0].content
        lines = ledger.read_lines(d.data_dir)
        assert [(x["runId"], x["phase"], x["status"]) for x in lines] == [
            (rep.run_id, "light-sleep", "completed")
        ]
        assert lines[0]["counts"]["create_summary"] == 1 and lines[0]["dryRun"] is False

        # Status: the run in the window, the next slot from the preset, the lock released.
        st: DreamsStatusResult = c.call(DreamsStatus(window_hours=1))
        light = next(p for p in st.phases if p.phase == "light-sleep")
        assert light.available and light.runs == 1 and light.last_run is not None
        assert light.last_run.id == rep.run_id and light.items == rep.items_processed
        assert light.schedule == "15 */2 * * *"
        assert light.next_run is not None and time.time() < light.next_run <= time.time() + 7200
        # Scored: everything but the new summary (the next run scores it).
        assert light.backlog == 1 and not light.running and light.stuck == ""
        rem = next(p for p in st.phases if p.phase == "rem")
        assert rem.available and rem.runs == 0 and rem.backlog is None  # REM is built
        assert st.lock is not None and not st.lock.held and st.lock.token == 1
        assert st.preset == "core"

        # Undo: the store reads as before, searches included.
        undone: UndoReport = c.call(DreamsUndo(run_id=rep.run_id))
        assert undone.reversed == rep.planned and undone.conflicts == 0
        assert _view(_export(c)) == _view(before)
        assert _searches(c) == before_search
        with pytest.raises(Conflict):
            c.call(DreamsUndo(run_id=rep.run_id))
        assert ledger.read_lines(d.data_dir)[-1]["event"] == "undo"

        # Phases not built yet are refused, clearly; unknown names too.
        rem_dry: DreamsRunResult = c.call(DreamsRun(phase="rem", dry_run=True))  # REM: built
        assert rem_dry.plan is not None and rem_dry.plan.phase == "rem"
        deep: DreamsRunResult = c.call(DreamsRun(phase="deepSleep", dry_run=True))  # built
        assert deep.plan is not None and deep.plan.phase == "deep-sleep"
        with pytest.raises(InvalidParams, match="unknown phase"):
            c.call(DreamsRun(phase="nap"))


def test_cli_round_trip(short_tmp: Path) -> None:
    with Daemon(short_tmp) as d, d.client() as c:
        _observe(c, "s2")
        st = json.loads(_cli(d, "dreams", "status", "--json").stdout)
        assert st["preset"] == "off" and all(p["next_run"] is None for p in st["phases"])

        out = _cli(d, "dreams", "run", "--phase", "light-sleep", "--dry-run", "--format", "json")
        assert out.returncode == 0, out.stderr
        plan = json.loads(out.stdout)["plan"]
        assert plan["counts"]["create_summary"] == 1

        out = _cli(d, "dreams", "run", "--phase", "light-sleep")
        assert out.returncode == 0 and "completed" in out.stdout, out.stderr
        out = _cli(d, "dreams", "run", "--phase", "light-sleep", "--json")
        second = json.loads(out.stdout)["report"]
        assert second["status"] == "completed"
        assert "create_summary" not in second["counts"]  # the session is summarized once

        text = _cli(d, "dreams", "status", "--window-hours", "2").stdout
        assert "light-sleep" in text and "lock: free" in text
        md = _cli(d, "dreams", "status", "--format", "markdown").stdout
        assert md.startswith("## Dreams") and "| light-sleep |" in md
        st = json.loads(_cli(d, "dreams", "--json", "status").stdout)
        light = next(p for p in st["phases"] if p["phase"] == "light-sleep")
        assert light["runs"] == 2 and light["last_run"]["id"] == second["run_id"]

        undo = _cli(d, "dreams", "undo", str(second["run_id"] - 1), "--json")
        assert undo.returncode == 0, undo.stderr
        assert json.loads(undo.stdout)["reversed"] >= 1

        bad = _cli(d, "dreams", "run", "--phase", "nap")  # REM: rem is built now
        assert bad.returncode == 2 and "unknown phase" in bad.stderr
        missing = _cli(d, "dreams", "undo", "999")
        assert missing.returncode == 4, missing.stderr


def _lock_row(d: Daemon) -> tuple[str, int, float] | None:
    conn = open_connection(d.data_dir / "reverie.db", readonly=True)
    try:
        rows = conn.execute(
            "SELECT owner, token, expires_at FROM locks WHERE name = 'dreams'"
        ).fetchall()
    except apsw.Error:
        return None
    finally:
        conn.close()
    return (str(rows[0][0]), int(rows[0][1]), float(rows[0][2])) if rows else None


def _records(n: int) -> list[MemoryRecord]:
    return [
        record(f"bulk fact number {i} about subsystem {i % 97}", uid=f"bulk-{i}") for i in range(n)
    ]


def test_sigkill_mid_run_lock_is_taken_over_after_ttl(short_tmp: Path) -> None:
    ttl = 5.0  # long enough that the restarted daemon usually meets the lock still held
    config = f'[dreams]\npreset = "off"\nlock_ttl_s = {ttl}\n[index]\nenabled = false\n'
    d = Daemon(short_tmp, config=config).start()
    try:
        with d.client() as c:
            c.import_records(_records(20_000), batch=2000)
        # Start a run on a connection of its own (it waits for the answer) and
        # kill the daemon once the lock is held: the first run scores all 20k.
        assert d.proc is not None
        env = d.environ()
        runner = subprocess.Popen(
            [sys.executable, "-m", "reverie", "dreams", "run", "--phase", "light-sleep"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        held = None
        while time.monotonic() < deadline:
            row = _lock_row(d)
            if row is not None and row[2] > time.time():
                held = row
                break
            time.sleep(0.002)
        assert held is not None, "the run never took the lock"
        dead_pid = d.proc.pid
        d.kill()
        runner.wait(30)
    finally:
        d.kill()
    owner, token, _expires = held
    assert owner.endswith(f":{dead_pid}") and token == 1

    d2 = Daemon(short_tmp, config=config)  # the same name: the same data dir and socket
    with d2, d2.client() as c:
        st: DreamsStatusResult = c.call(DreamsStatus())
        assert st.lock is not None and st.lock.owner == owner and st.lock.token == 1
        if st.lock.held and st.lock.expires_at - time.time() > 0.5:
            with pytest.raises(Conflict, match="held by"):
                c.call(DreamsRun(phase="light-sleep"))
        # After the TTL the lock is free to take, with a higher fencing token.
        time.sleep(max(0.0, st.lock.expires_at - time.time()) + 0.1)
        res: DreamsRunResult = c.call(DreamsRun(phase="light-sleep"))
        assert res.report is not None and res.report.status == "completed"
        st = c.call(DreamsStatus())
        assert st.lock is not None and st.lock.token == 2 and not st.lock.held
        assert st.lock.owner.endswith(f":{d2.proc.pid if d2.proc else 0}")
        # The killed run is closed as failed (its committed batches stay undoable).
        runs = {r.id: r for r in [p.last_run for p in st.phases] if r is not None}
        assert res.report.run_id in runs
        conn = open_connection(d2.data_dir / "reverie.db", readonly=True)
        try:
            statuses = dict(conn.execute("SELECT id, status FROM dream_runs").fetchall())
        finally:
            conn.close()
        assert "running" not in statuses.values(), statuses


def _run(i: int, counts: dict[str, int], status: str = "completed") -> ledger.RunRecord:
    return ledger.RunRecord(
        id=i,
        phase="light-sleep",
        trigger="scheduled",
        status=status,
        started_at=float(i),
        completed_at=float(i) + 1,
        duration_ms=1000,
        items_processed=10,
        counts=counts,
        notes="",
        errors=[],
        undone_at=None,
    )


def test_stuck_warning() -> None:
    from reverie.phases.service import stuck_warning

    idle = [_run(i, {"skipped": 2}) for i in (3, 2, 1)]
    assert "changed nothing while 7 items wait" in stuck_warning(idle, 7)
    assert stuck_warning(idle, 0) == ""  # nothing to do: quiet is fine
    assert stuck_warning(idle[:2], 7) == ""  # too few runs to tell
    same = [_run(i, {"set_meta": 4}) for i in (3, 2, 1)]
    assert "identical counts" in stuck_warning(same, 0)
    moving = [_run(3, {"set_meta": 4}), _run(2, {"set_meta": 5}), _run(1, {"set_meta": 4})]
    assert stuck_warning(moving, 9) == ""
    assert stuck_warning([_run(4, {}, "running"), *idle[:2]], 7) == ""


def test_sighup_reschedules(short_tmp: Path) -> None:
    import signal

    with Daemon(short_tmp) as d, d.client() as c:
        st: DreamsStatusResult = c.call(DreamsStatus())
        assert st.preset == "off" and all(p.next_run is None for p in st.phases)
        assert d.config_path is not None
        d.config_path.write_text('[dreams]\npreset = "deep"\njitter_s = 0\n')
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while (st := c.call(DreamsStatus())).preset != "deep":
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.02)
        while (light := st.phases[0]).next_run is None:  # the loops restart after the reload
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.02)
            st = c.call(DreamsStatus())
        assert light.phase == "light-sleep" and light.schedule == "15 * * * *"
        assert time.time() < light.next_run <= time.time() + 3600
        # A bad expression on reload is refused and the running schedule kept.
        d.config_path.write_text('[dreams.phases.rem]\ncron = "61 * * * *"\n')
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "dreams.phases.rem.cron" not in d.log():
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.02)
        assert c.call(DreamsStatus()).preset == "deep"
