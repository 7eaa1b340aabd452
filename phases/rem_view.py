"""What a REM run reads: its candidate memories, their vectors, REM's own summaries.

Candidates. Per workspace, the active memories (archived ones, the
`exclude_kinds` and hook observations of a session left out, and REM's own
summaries and digests) with, for each, whether it has a current vector of
the model with the most rows in `embeddings` (the one the daemon indexes
with; reused only while its content hash still matches). A memory is
*changed* when written since the last completed REM run read the store:
its `seq` (every write to a memory takes a higher one) is above the run's
watermark, the highest `seq` that run's plan saw. Not a time: a write
between a plan and its ledger row, or under a clock set back, is still
after the watermark. Also changed: the memories that run left for the
next one (`pending`: its caps on pairs, ops and summaries, memories it could
not embed). The first run, a run after one recorded before watermarks, or
`incremental = false`, counts all of them changed.

Reads. An incremental run reads the rows of the workspaces with a changed
memory only (the rest is counted); vectors are read later, per row block,
through `fetcher` (rem_pairs.RowVectors), and a row without a current one
is embedded there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apsw
import msgspec
import numpy as np
import numpy.typing as npt
from reverie.phases.cancel import NEVER, ROWS, Cancel
from reverie.phases.settings import RemConfig

Floats = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
_json = msgspec.json.Encoder()


@dataclass(slots=True)
class Mem:
    id: int
    kind: str
    content: str
    observed_at: float
    recall_count: int
    pinned: bool
    dirty: bool  # changed since the last REM run
    seq: int


def store_model(conn: apsw.Connection) -> str | None:
    """The model with the most stored vectors (None: no vectors at all)."""
    row = conn.execute(
        "SELECT model FROM embeddings GROUP BY model ORDER BY count(*) DESC, model LIMIT 1"
    ).fetchone()
    return str(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class Since:
    """What the last completed REM run left: memories above `seq`, and `pending`, changed."""

    seq: int
    pending: frozenset[int]

    def changed(self, mid: int, seq: int) -> bool:
        return seq > self.seq or mid in self.pending


def watermark(conn: apsw.Connection) -> int:
    """The highest `seq` now: read before the candidates, so that a write committed
    between the two reads counts as changed next time too (compared twice, never
    missed)."""
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM memories").get)


def changed_since(conn: apsw.Connection, cfg: RemConfig) -> Since | None:
    """Where this run starts (None: everything counts as changed)."""
    if not cfg.incremental:
        return None
    row = conn.execute(
        "SELECT watermark, pending FROM dream_runs WHERE phase = 'rem' AND status = 'completed' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None or row[0] is None:  # never ran, or ran before watermarks (schema 8)
        return None
    return Since(int(row[0]), frozenset(int(i) for i in json.loads(str(row[1]))))


def read_candidates(
    conn: apsw.Connection,
    cfg: RemConfig,
    model: str | None,
    since: Since | None,
    cancel: Cancel = NEVER,
) -> tuple[dict[str, list[tuple[Mem, bool]]], int]:
    """workspace -> [(memory, has a current `model` vector)], and how many candidates
    the store holds (an incremental run reads only the workspaces with a changed one)."""
    kinds = ",".join("?" * len(cfg.exclude_kinds))
    # REM's own summaries and digests are derived data: never candidates
    # (a summary would cluster with its members, a digest with the last one).
    where = (
        "m.state = 'active' AND m.tier != 'archived' "
        f"AND m.kind NOT IN ({kinds}) AND NOT (? AND m.kind = 'observation' "
        "AND json_extract(m.metadata, '$.session_id') IS NOT NULL) "
        "AND json_extract(m.metadata, '$.phase') IS NOT 'rem'"
    )
    args = (*cfg.exclude_kinds, cfg.skip_session_observations)
    scope = ""
    total: int | None = None
    if since is not None:
        # Incremental: only the workspaces with a changed memory are read
        # (rows and vectors); the others only counted.
        count, changed = conn.execute(  # one row, always
            "SELECT count(*), json_group_array(DISTINCT CASE WHEN m.seq > ? OR m.id IN "
            "(SELECT value FROM json_each(?)) THEN m.workspace END) "
            f"FROM memories m WHERE {where}",
            (since.seq, _json.encode(sorted(since.pending)).decode(), *args),
        ).fetchall()[0]
        total = int(str(count))
        spaces_ws = [w for w in json.loads(str(changed)) if w is not None]
        scope = f" AND m.workspace IN ({','.join('?' * len(spaces_ws))})"
        args = (*args, *spaces_ws)
    rows: list[tuple[Any, ...]] = conn.execute(
        "SELECT m.id, m.workspace, m.kind, m.content, m.observed_at, m.recall_count, "
        "json_extract(m.metadata, '$.pinned'), m.seq, "
        "e.content_hash IS m.content_hash "  # a current vector (read later, if needed)
        "FROM memories m LEFT JOIN embeddings e ON e.memory_id = m.id AND e.model = ? "
        f"WHERE {where}{scope} ORDER BY m.workspace, m.id",
        (model, *args),
    ).fetchall()
    items_total = len(rows) if total is None else int(total)
    cancel.check()
    by_ws: dict[str, list[tuple[Mem, bool]]] = {}
    for n, (mid, ws, kind, content, observed, rcount, pinned, seq, has) in enumerate(rows, 1):
        cancel.every(n)
        mem = Mem(
            int(mid),
            str(kind),
            str(content),
            float(observed),
            int(rcount),
            bool(pinned),
            since is None or since.changed(int(mid), int(seq)),
            int(seq),
        )
        by_ws.setdefault(str(ws), []).append((mem, bool(has)))
    return by_ws, items_total


def fetcher(
    conn: apsw.Connection,
    model: str | None,
    embedder: Any,
    mems: list[Mem],
    cancel: Cancel = NEVER,
) -> Callable[[Ids], Floats]:
    """Rows -> their current stored vectors; a row without one is embedded here
    (in batches, `cancel` checked between them: a local model takes ms a text)."""

    def fetch(rows: Ids) -> Floats:
        want = [mems[r].id for r in rows.tolist()]
        blobs: dict[int, bytes] = {}
        for i in range(0, len(want), 50_000):
            cancel.check()
            chunk = _json.encode(want[i : i + 50_000]).decode()
            for mid, blob in conn.execute(
                "SELECT m.id, e.vector FROM memories m JOIN embeddings e "
                "ON e.memory_id = m.id AND e.model = ? AND e.content_hash = m.content_hash "
                "WHERE m.id IN (SELECT value FROM json_each(?))",
                (model, chunk),
            ):
                blobs[int(mid)] = blob
        missing = [i for i, mid in enumerate(want) if mid not in blobs]
        fresh = _embed(embedder, [mems[rows[i]].content for i in missing], cancel)
        dim = fresh.shape[1] if fresh is not None else len(next(iter(blobs.values()))) // 4
        out = np.empty((len(want), dim), dtype=np.float32)
        for i, mid in enumerate(want):
            blob = blobs.get(mid)
            if blob is not None:
                out[i] = np.frombuffer(blob, dtype="<f4")
        if fresh is not None:
            out[missing] = fresh
        return out

    return fetch


def _embed(embedder: Any, texts: list[str], cancel: Cancel) -> Floats | None:
    """`embedder.embed(texts)` in batches of ROWS between cancel checks (None: no texts)."""
    if not texts:
        return None
    parts = []
    for i in range(0, len(texts), ROWS):
        cancel.check()
        parts.append(np.asarray(embedder.embed(texts[i : i + ROWS]), dtype=np.float32))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def rem_summaries(conn: apsw.Connection) -> dict[str, dict[int, frozenset[int]]]:
    """Active REM cluster summaries: workspace -> summary id -> member ids."""
    out: dict[str, dict[int, frozenset[int]]] = {}
    for sid, ws, prov in conn.execute(
        "SELECT id, workspace, provenance FROM memories WHERE state = 'active' "
        "AND kind = 'summary' AND json_extract(metadata, '$.phase') = 'rem'"
    ):
        mids = json.loads(str(prov)).get("memories", [])
        out.setdefault(str(ws), {})[int(sid)] = frozenset(int(m) for m in mids)
    return out
