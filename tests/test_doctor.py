"""`reverie doctor` against a real daemon, a stopped one, and planted problems."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import Daemon, wait_indexed
from reverie.rpc import spool
from reverie.rpc.proto_doctor import Doctor, DoctorResult
from reverie.rpc.proto_events import Event
from reverie.store.connection import open_connection
from reverie.store.database import DB_FILENAME


def doctor(d: Daemon, *args: str) -> tuple[int, dict[str, Any]]:
    r = subprocess.run(
        [sys.executable, "-m", "reverie", "doctor", "--json", *args],
        env=d.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_healthy_daemon_is_all_ok(daemon: Daemon) -> None:
    with daemon.client() as c:
        for i in range(30):
            c.remember(f"healthy memory {i}")
        wait_indexed(c)
        own: DoctorResult = c.call(Doctor())
    assert {ch.name for ch in own.checks} >= {"schema", "quick_check", "index", "embedder"}
    code, report = doctor(daemon)
    checks = by_name(report)
    assert code == 0 and report["status"] == "ok", report
    assert set(checks) >= {
        "daemon",
        "socket_permissions",
        "data_dir_permissions",
        "free_space",
        "schema",
        "quick_check",
        "index",
        "embedder",
        "phase_locks",
        "last_run:light-sleep",
        "last_run:rem",
        "last_run:deep-sleep",
        "spool_backlog",
    }
    assert "30 vectors, 30 indexable memories, 0 changes pending" in checks["index"]["summary"]
    # the text form says the same
    r = subprocess.run(
        [sys.executable, "-m", "reverie", "doctor"],
        env=daemon.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "all checks ok" in r.stdout


def test_daemon_down_still_checks_the_files_read_only(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    d.start()
    with d.client() as c:
        c.remember("a memory to find")
        wait_indexed(c)
    assert d.stop() == 0
    db = d.data_dir / DB_FILENAME
    before = db.read_bytes()
    code, report = doctor(d)
    checks = by_name(report)
    assert code == 1 and report["status"] == "fail"
    assert checks["daemon"]["status"] == "fail" and checks["daemon"]["hint"]
    for name in ("schema", "quick_check", "index", "embedder", "phase_locks", "free_space"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "saved index: 1 vectors" in checks["index"]["summary"]
    assert db.read_bytes() == before  # opened read-only


def test_stale_lock_and_failed_run_warn(daemon: Daemon) -> None:
    now = time.time()
    conn = open_connection(daemon.data_dir / DB_FILENAME)
    with conn:
        conn.execute(
            "INSERT INTO locks (name, owner, token, acquired_at, expires_at) "
            "VALUES ('rem', 'pid 4242 (gone)', 7, ?, ?)",
            (now - 4000, now - 3600),
        )
        conn.execute(
            "INSERT INTO dream_runs (phase, trigger, started_at, completed_at, duration_ms, "
            "errors, status) VALUES ('deep-sleep', 'schedule', ?, ?, 12, ?, 'failed')",
            (now - 60, now - 59, '["disk on fire"]'),
        )
    conn.close()
    code, report = doctor(daemon)
    checks = by_name(report)
    assert code == 1 and report["status"] == "warn"
    assert checks["phase_locks"]["status"] == "warn"
    assert (
        "rem" in checks["phase_locks"]["summary"] and "expired" in checks["phase_locks"]["summary"]
    )
    assert checks["last_run:deep-sleep"]["status"] == "warn"
    assert "disk on fire" in checks["last_run:deep-sleep"]["summary"]
    assert checks["last_run:rem"]["status"] == "ok"
    bad = [c for c in report["checks"] if c["status"] != "ok"]
    assert {c["name"] for c in bad} == {"phase_locks", "last_run:deep-sleep"}


def test_spool_backlog_warns(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    d.start()
    assert d.stop() == 0
    code, report = doctor(d)
    assert by_name(report)["spool_backlog"]["status"] == "ok"
    events = [Event(key=f"k{i}", harness="generic", type="Note", workspace="w") for i in range(3)]
    spool.append(events, d.data_dir / "spool")
    code, report = doctor(d)
    backlog = by_name(report)["spool_backlog"]
    assert code == 1 and backlog["status"] == "warn"
    assert "1 file(s), 3 event(s) waiting" in backlog["summary"]
    assert "start the daemon" in backlog["hint"]


def test_bad_data_dir_permissions_fail(daemon: Daemon) -> None:
    mode = daemon.data_dir.stat().st_mode
    daemon.data_dir.chmod(0o777)
    try:
        code, report = doctor(daemon)
    finally:
        daemon.data_dir.chmod(mode)
    check = by_name(report)["data_dir_permissions"]
    assert code == 1 and report["status"] == "fail"
    assert check["status"] == "fail" and "writable by everyone" in check["summary"]
    assert check["hint"].startswith("chmod 700")
    daemon.data_dir.chmod(0o750)
    try:
        code, report = doctor(daemon)
    finally:
        daemon.data_dir.chmod(mode)
    assert by_name(report)["data_dir_permissions"]["status"] == "warn"
