"""Deep sleep's plan, apply (with maintenance) and undo times (not part of pytest).

    python3 tests/bench/bench_dream_deep.py [N ...]   (default: 10000 100000)

The store is bench_dream_light's (80% session observations, facts of every
age), then: light sleep is applied (so archive marks exist, untimed), 2% of
the facts become popular (recalled now by several distinct queries), and 1%
of the memories are forgotten 100 days ago (the purge's work).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench_dream_light import build, plan_apply_undo
from reverie.phases.deep import DeepSleep, checkpoint_on
from reverie.phases.light import LightSleep
from reverie.phases.runner import apply_plan, transact_on
from reverie.store.connection import open_connection

DAY = 86400.0


def main(sizes: list[int]) -> None:
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "bench.db"
            now = time.time()
            build(path, n, now)
            conn = open_connection(path)
            apply_plan(LightSleep().plan(conn, now), transact=transact_on(conn))
            with conn:
                conn.execute(
                    "UPDATE memories SET recall_count = 5, distinct_queries = 4, "
                    "last_recalled_at = ?, importance = 0.9 WHERE kind = 'fact' AND id % 10 = 0",
                    (now,),
                )
                conn.execute(
                    "UPDATE memories SET state = 'forgotten', metadata = json_set(metadata, "
                    "'$.forgotten', json_object('at', ?, 'reason', 'bench')) WHERE id % 100 = 7",
                    (now - 100 * DAY,),
                )
            deep = DeepSleep()
            c = plan_apply_undo(deep, conn, now, after=deep.maintenance(now, checkpoint_on(conn)))
            print(
                f"deep-sleep n={n}: plan {c.plan_s:.2f}s "
                f"({len(c.plan.ops)} ops: {c.report.counts}), "
                f"apply+maintenance {c.apply_s:.2f}s, undo {c.undo_s:.2f}s\n"
                f"  notes: {c.report.notes}"
            )
            conn.close()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
