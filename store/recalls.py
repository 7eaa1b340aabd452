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
    now = time.time()
    for mid, score in hits:
        seen = conn.execute(
            "SELECT 1 FROM recalls WHERE memory_id = ? AND query_hash = ? LIMIT 1", (mid, qhash)
        ).get
        conn.execute(
            "INSERT INTO recalls (memory_id, query_hash, score, recalled_at) VALUES (?, ?, ?, ?)",
            (mid, qhash, score, now),
        )
        conn.execute(
            "UPDATE memories SET recall_count = recall_count + 1, last_recalled_at = ?, "
            "distinct_queries = distinct_queries + ? WHERE id = ?",
            (now, 0 if seen else 1, mid),
        )


def record_many(
    conn: apsw.Connection, batch: Sequence[tuple[str, Sequence[tuple[int, float]]]]
) -> None:
    """Several searches' recalls, (query hash, hits) each, in one transaction."""
    for qhash, hits in batch:
        record(conn, qhash, hits)
