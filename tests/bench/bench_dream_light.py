"""Light sleep's plan, apply and undo times on a synthetic store (not part of pytest).

    python3 tests/bench/bench_dream_light.py [N ...]   (default: 10000)

Each store holds N memories: 80% observations in sessions of 20 (all
finished), the rest facts of every age, some recalled.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import apsw
import msgspec
from reverie.phases.light import LightSleep
from reverie.phases.runner import Phase, Plan, RunReport, apply_plan, transact_on
from reverie.phases.undo import undo
from reverie.store import schema
from reverie.store.connection import open_connection

_json = msgspec.json.Encoder()


def build(path: Path, n: int, now: float) -> None:
    conn = open_connection(path, synchronous="OFF")
    schema.migrate(conn)
    rnd = random.Random(7)
    rows = []
    for i in range(n):
        obs = i < n * 0.8
        at = now - 3600 - rnd.random() * (10 * 86400 if obs else 200 * 86400)
        meta = (
            {"session_id": f"s{i // 20}", "event": "PostToolUse", "harness": "bench"} if obs else {}
        )
        tags = ["event:PostToolUse", f"tool:T{i % 5}"] if obs else []
        rows.append(
            (
                f"{i:032x}",
                "ws",
                "observation" if obs else "fact",
                f"memory {i} about topic {i % 97} and word{i % 1013}",
                _json.encode(tags).decode(),
                rnd.random(),
                at,
                at,
                at,
                f"h{i}",
                _json.encode(meta).decode(),
                i + 1,
                rnd.randrange(6) if not obs else 0,
            )
        )
    with conn:
        conn.executemany(
            "INSERT INTO memories (uid, workspace, kind, content, tags, importance, created_at, "
            "observed_at, updated_at, content_hash, metadata, seq, recall_count) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()


class Cycle(NamedTuple):
    """One phase planned, applied and undone, with the seconds each took."""

    plan: Plan
    report: RunReport
    plan_s: float
    apply_s: float
    undo_s: float


def plan_apply_undo(phase: Phase, conn: apsw.Connection, now: float, **apply: Any) -> Cycle:
    """Time a phase's plan, apply (`apply`: apply_plan's extra arguments) and undo."""
    t0 = time.perf_counter()
    plan = phase.plan(conn, now)
    t1 = time.perf_counter()
    report = apply_plan(plan, transact=transact_on(conn), **apply)
    t2 = time.perf_counter()
    undo(report.run_id, transact=transact_on(conn))
    t3 = time.perf_counter()
    return Cycle(plan, report, t1 - t0, t2 - t1, t3 - t2)


def main(sizes: list[int]) -> None:
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "bench.db"
            now = time.time()
            build(path, n, now)
            conn = open_connection(path)
            c = plan_apply_undo(LightSleep(), conn, now)
            print(
                f"light-sleep n={n}: plan {c.plan_s:.2f}s "
                f"({len(c.plan.ops)} ops: {c.plan.counts()}), "
                f"apply {c.apply_s:.2f}s, undo {c.undo_s:.2f}s"
            )
            conn.close()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000])
