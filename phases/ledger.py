"""The ledger of dream runs: `dream_runs`/`dream_ops` rows and `dreams-ledger.jsonl`.

Every non-dry run gets one `dream_runs` row (opened as 'running', closed as
'completed' or 'failed'; 'undone' once reversed) and one `dream_ops` row per
applied operation. When a run ends, the same record is appended as one JSON
line (Remnic's ledger shape, schemaVersion 1) to `<data dir>/dreams-ledger.jsonl`
and fsynced: an operator can `tail` it without the daemon. Undo appends a
line too (`event: "undo"`). Dry runs write nothing here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any, Literal

import apsw
import msgspec
from reverie.errors import NotFound
from reverie.phases.names import PHASES, normalize_phase
from reverie.phases.ops import Applied
from reverie.rpc.proto_dreams import RunRecord as RunRecord  # defined with the protocol

SCHEMA_VERSION = 1
LEDGER_FILENAME = "dreams-ledger.jsonl"
Trigger = Literal["scheduled", "manual"]
Status = Literal["running", "completed", "failed", "undone"]
_json = msgspec.json.Encoder()


_RUN_COLUMNS = (
    "id, phase, trigger, status, started_at, completed_at, duration_ms, items_processed, "
    "counts, notes, errors, undone_at"
)


def _record(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        id=row[0],
        phase=row[1],
        trigger=row[2],
        status=row[3],
        started_at=row[4],
        completed_at=row[5],
        duration_ms=row[6],
        items_processed=row[7],
        counts=json.loads(row[8]),
        notes=row[9],
        errors=json.loads(row[10]),
        undone_at=row[11],
    )


def start_run(conn: apsw.Connection, phase: str, trigger: Trigger, started_at: float) -> int:
    conn.execute(
        "INSERT INTO dream_runs (phase, trigger, started_at, status) VALUES (?, ?, ?, 'running')",
        (phase, trigger, started_at),
    )
    return conn.last_insert_rowid()


def record_op(conn: apsw.Connection, run_id: int, seq: int, applied: Applied) -> None:
    conn.execute(
        "INSERT INTO dream_ops (run_id, seq, op, before_ids, after_ids, data) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            run_id,
            seq,
            applied.op,
            _json.encode(applied.before_ids).decode(),
            _json.encode(applied.after_ids).decode(),
            _json.encode(applied.data).decode(),
        ),
    )


def finish_run(
    conn: apsw.Connection,
    run_id: int,
    *,
    status: Status,
    completed_at: float,
    duration_ms: int,
    items_processed: int,
    counts: dict[str, int],
    notes: str,
    errors: list[str],
    watermark: int | None = None,
    pending: list[int] | None = None,
) -> RunRecord:
    """`watermark`, `pending`: REM's incremental state (phases/rem_view.py)."""
    conn.execute(
        "UPDATE dream_runs SET status = ?, completed_at = ?, duration_ms = ?, "
        "items_processed = ?, counts = ?, notes = ?, errors = ?, watermark = ?, pending = ? "
        "WHERE id = ?",
        (
            status,
            completed_at,
            duration_ms,
            items_processed,
            _json.encode(counts).decode(),
            notes,
            _json.encode(errors).decode(),
            watermark,
            _json.encode(pending or []).decode(),
            run_id,
        ),
    )
    return get_run(conn, run_id)


def mark_undone(conn: apsw.Connection, run_id: int, at: float) -> None:
    conn.execute(
        "UPDATE dream_runs SET status = 'undone', undone_at = ? WHERE id = ?", (at, run_id)
    )


def get_run(conn: apsw.Connection, run_id: int) -> RunRecord:
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM dream_runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"no dream run with id {run_id}", data={"id": run_id})
    return _record(row)


def recent_runs(
    conn: apsw.Connection, *, phase: str | None = None, since: float = 0.0, limit: int = 50
) -> list[RunRecord]:
    """Runs started at or after `since`, newest first (for `dreams status`)."""
    sql = f"SELECT {_RUN_COLUMNS} FROM dream_runs WHERE started_at >= ?"
    args: list[Any] = [since]
    if phase is not None:
        sql += " AND phase = ?"
        args.append(normalize_phase(phase))
    sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
    args.append(limit)
    return [_record(r) for r in conn.execute(sql, args)]


def last_runs(conn: apsw.Connection) -> dict[str, RunRecord]:
    """Each phase's latest run (phases never run are absent)."""
    out: dict[str, RunRecord] = {}
    for phase in PHASES:
        runs = recent_runs(conn, phase=phase, limit=1)
        if runs:
            out[phase] = runs[0]
    return out


def run_ops(conn: apsw.Connection, run_id: int) -> list[tuple[int, str, dict[str, Any]]]:
    """A run's applied ops as (seq, op, data), in the order they were applied."""
    rows = conn.execute(
        "SELECT seq, op, data FROM dream_ops WHERE run_id = ? ORDER BY seq", (run_id,)
    )
    return [(int(s), str(o), json.loads(str(d))) for s, o, d in rows]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def entry(run: RunRecord, *, event: str = "run") -> dict[str, Any]:
    """The ledger's JSON shape for a run (camelCase keys, ISO-8601 UTC times)."""
    out: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "event": event,
        "runId": run.id,
        "startedAt": iso(run.started_at),
        "completedAt": iso(run.completed_at),
        "durationMs": run.duration_ms,
        "phase": run.phase,
        "trigger": run.trigger,
        "status": run.status,
        "itemsProcessed": run.items_processed,
        "counts": run.counts,
        "dryRun": False,
        "notes": run.notes,
        "errors": run.errors,
    }
    if run.undone_at is not None:
        out["undoneAt"] = iso(run.undone_at)
    return out


def append_line(data_dir: Path | None, record: dict[str, Any]) -> None:
    """Append one JSON line to the ledger file and fsync it (no-op without a data dir)."""
    if data_dir is None:
        return
    line = _json.encode(record) + b"\n"
    fd = os.open(data_dir / LEDGER_FILENAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write with O_APPEND: lines never interleave
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(data_dir: Path) -> list[dict[str, Any]]:
    """The ledger file's records (a torn last line, from a crash, is skipped)."""
    try:
        text = (data_dir / LEDGER_FILENAME).read_text()
    except FileNotFoundError:
        return []
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
