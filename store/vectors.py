"""Vectors in SQLite: the durable side of the HNSW index.

The index file is derived data; these rows are what it is rebuilt from
without re-embedding. A vector is reused only while its memory's content
hash matches the one it was computed from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import apsw
import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Change:
    """A memory as the index needs to see it after a change."""

    id: int
    seq: int
    workspace: str
    active: bool
    content: str
    content_hash: str


def changed_since(conn: apsw.Connection, seq: int, limit: int) -> list[Change]:
    rows: list[tuple[Any, ...]] = conn.execute(
        "SELECT id, seq, workspace, state = 'active' AND tier != 'archived', content, "
        "content_hash FROM memories WHERE seq > ? ORDER BY seq LIMIT ?",
        (seq, limit),
    ).fetchall()
    return [Change(int(r[0]), int(r[1]), str(r[2]), bool(r[3]), str(r[4]), str(r[5])) for r in rows]


def max_seq(conn: apsw.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM memories").get)


def stored(conn: apsw.Connection, model: str, changes: Sequence[Change]) -> dict[int, Floats]:
    """Vectors already computed by `model` for these memories' current content."""
    if not changes:
        return {}
    want = {c.id: c.content_hash for c in changes}
    marks = ",".join("?" * len(want))
    out: dict[int, Floats] = {}
    for mid, chash, blob in conn.execute(
        f"SELECT memory_id, content_hash, vector FROM embeddings "
        f"WHERE model = ? AND memory_id IN ({marks})",
        (model, *want),
    ):
        if want.get(mid) == chash:
            out[int(mid)] = np.frombuffer(blob, dtype="<f4")
    return out


def save(conn: apsw.Connection, model: str, items: Sequence[tuple[int, str, Floats]]) -> None:
    # A memory purged since its vector was computed is skipped, not an error.
    conn.executemany(
        "INSERT OR REPLACE INTO embeddings (memory_id, model, dim, content_hash, vector) "
        "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM memories WHERE id = ?)",
        [(mid, model, len(v), chash, v.astype("<f4").tobytes(), mid) for mid, chash, v in items],
    )


def active_count(conn: apsw.Connection) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM memories WHERE state = 'active' AND tier != 'archived'"
        ).get
    )


def active_batches(conn: apsw.Connection, batch: int = 4096) -> Iterator[list[Change]]:
    """Every indexable memory, in id order, in batches (for a rebuild)."""
    after = 0
    while True:
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT id, seq, workspace, content, content_hash FROM memories "
            "WHERE id > ? AND state = 'active' AND tier != 'archived' ORDER BY id LIMIT ?",
            (after, batch),
        ).fetchall()
        if not rows:
            return
        yield [Change(int(r[0]), int(r[1]), str(r[2]), True, str(r[3]), str(r[4])) for r in rows]
        after = int(rows[-1][0])


def drop_other_models(conn: apsw.Connection, keep: str, limit: int = 10_000) -> int:
    """Delete up to `limit` vectors of models other than `keep` (after a re-embed)."""
    conn.execute(
        "DELETE FROM embeddings WHERE (memory_id, model) IN (SELECT memory_id, model "
        "FROM embeddings WHERE model != ? LIMIT ?)",
        (keep, limit),
    )
    return conn.changes()
