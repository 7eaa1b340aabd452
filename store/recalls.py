"""Recalls: which memory a search returned, for which query, and when.

The dreaming phases promote memories that keep being recalled, by many
distinct queries. Recording runs after the search has answered, in the
writer's next group: a search never waits for it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence

import apsw

_WS = re.compile(r"\s+")


def query_hash(query: str) -> str:
    """Queries that differ only in case and spacing count as one."""
    return hashlib.sha256(_WS.sub(" ", query.lower()).strip().encode()).hexdigest()[:16]


def record(conn: apsw.Connection, qhash: str, hits: Sequence[tuple[int, float]]) -> None:
    record_many(conn, [(qhash, hits)])


def record_many(
    conn: apsw.Connection, batch: Sequence[tuple[str, Sequence[tuple[int, float]]]]
) -> None:
    """Several searches' recalls, (query hash, hits) each, in one transaction.

    Three statements for the whole batch (executemany), not three per hit.
    A query counts as distinct for a memory the first time the pair is seen.
    """
    now = time.time()
    rows = [(mid, qhash, score, now) for qhash, hits in batch for mid, score in hits]
    if not rows:
        return
    pairs = {(mid, qhash) for mid, qhash, _, _ in rows}
    mids = sorted({mid for mid, _ in pairs})
    seen: set[tuple[int, str]] = set()
    for start in range(0, len(mids), 500):
        part = mids[start : start + 500]
        marks = ",".join("?" * len(part))
        seen.update(
            (int(m), str(q))
            for m, q in conn.execute(
                f"SELECT DISTINCT memory_id, query_hash FROM recalls WHERE memory_id IN ({marks})",
                part,
            )
            if (int(m), str(q)) in pairs
        )
    conn.executemany(
        "INSERT INTO recalls (memory_id, query_hash, score, recalled_at) VALUES (?, ?, ?, ?)", rows
    )
    count: dict[int, int] = {}
    for mid, _, _, _ in rows:
        count[mid] = count.get(mid, 0) + 1
    fresh: dict[int, int] = {}
    for mid, _ in pairs - seen:
        fresh[mid] = fresh.get(mid, 0) + 1
    conn.executemany(
        "UPDATE memories SET recall_count = recall_count + ?, last_recalled_at = ?, "
        "distinct_queries = distinct_queries + ? WHERE id = ?",
        [(n, now, fresh.get(mid, 0), mid) for mid, n in count.items()],
    )
