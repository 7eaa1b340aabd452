"""REM's typed operations: merge near-duplicates, supersede an outdated fact.

Both ops only change *state*: a source memory becomes `superseded` with
`superseded_by` pointing at the memory that replaces it (search hides it,
the row and its text stay), and the replacing memory's provenance lists
what it absorbed (`merged_from` / `supersedes`), so every source stays
reachable from the survivor and the survivor from every source.

This module does not import phases/ops.py (ops.py imports it to register
these types in its `Op` union): apply returns a plain `RemApplied` tuple
that ops.apply_op wraps into its `Applied` record. The before-state kept
for undo is each source's (state, superseded_by) and the survivor's exact
provenance text. Every write takes a new seq, so the vector indexer drops
superseded rows from the index and takes them back on undo.

Two ops *create* memories (phases/rem_clusters.py plans them): a cluster's
consolidated `summary` (its provenance lists every member, and the older
summaries of the same cluster it supersedes) and the run's `digest`. Undo
turns a created memory into a purged tombstone, as light sleep's session
summaries, and brings the superseded summaries back.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import apsw
import msgspec
from reverie.rpc.protocol import Remember
from reverie.store import memories

_json = msgspec.json.Encoder()
# (op name, before_ids, after_ids, data): ops.Applied without the import cycle.
RemApplied = tuple[str, list[int], list[int], dict[str, Any]]


class MergeDuplicates(msgspec.Struct, tag="merge_duplicates", kw_only=True, frozen=True):
    """Supersede `sources` by `canonical`; canonical's provenance.merged_from gains them.

    Skipped unless the canonical and every source are still active.
    `similarity` is each source's cosine to the canonical (for the operator).
    """

    canonical: int
    sources: list[int]
    similarity: list[float] = []


class Supersede(msgspec.Struct, tag="supersede", kw_only=True, frozen=True):
    """The newer memory `new_id` replaces `old_id` (same subject, changed value).

    `old_values` / `new_values` are the values that changed (for the operator).
    """

    old_id: int
    new_id: int
    old_values: list[str] = []
    new_values: list[str] = []


class SummarizeCluster(msgspec.Struct, tag="summarize_cluster", kw_only=True, frozen=True):
    """Write `content` as a `summary` over `members`, superseding `supersedes`.

    `supersedes` are the earlier summaries of this cluster (it grew). Skipped
    unless every member and every earlier summary is still active. `writer`
    is "deterministic" or "llm:<model>".
    """

    workspace: str
    members: list[int]
    content: str
    supersedes: list[int] = []
    observed_at: float = 0.0
    importance: float = 0.4
    writer: str = "deterministic"


class WriteDigest(msgspec.Struct, tag="write_digest", kw_only=True, frozen=True):
    """The run's `digest` memory, written last from the ops this run applied.

    Its text lists what the run's recorded ops did (ids included), not what
    was planned: an op skipped at apply time is not in it. `planned` is the
    plan's count per op, for the dry run. Skipped when nothing was applied.
    """

    workspace: str
    planned: dict[str, int] = {}


REM_OPS = (MergeDuplicates, Supersede, SummarizeCluster, WriteDigest)
REM_OP_NAMES = frozenset({"merge_duplicates", "supersede", "summarize_cluster", "write_digest"})
CLUSTER_TAG = "rem-cluster"
DIGEST_TAG = "rem-digest"


def _row(conn: apsw.Connection, mid: int) -> tuple[str, int | None, str] | None:
    row = conn.execute(
        "SELECT state, superseded_by, provenance FROM memories WHERE id = ?", (mid,)
    ).fetchone()
    if row is None:
        return None
    return str(row[0]), (int(row[1]) if row[1] is not None else None), str(row[2])


def _set_state(conn: apsw.Connection, mid: int, state: str, by: int | None, now: float) -> None:
    conn.execute(
        "UPDATE memories SET state = ?, superseded_by = ?, updated_at = ?, seq = ? WHERE id = ?",
        (state, by, now, memories.next_seq(conn), mid),
    )


def _set_provenance(conn: apsw.Connection, mid: int, text: str, now: float) -> None:
    conn.execute(
        "UPDATE memories SET provenance = ?, updated_at = ?, seq = ? WHERE id = ?",
        (text, now, memories.next_seq(conn), mid),
    )


def _absorb(
    conn: apsw.Connection, survivor: int, key: str, sources: list[int], now: float
) -> tuple[str, str] | None:
    """Supersede `sources` by `survivor` and list them under provenance[key].

    Returns the survivor's provenance (before, after), or None (nothing
    written) when the survivor or a source is no longer active.
    """
    head = _row(conn, survivor)
    if head is None or head[0] != "active":
        return None
    for sid in sources:
        got = _row(conn, sid)
        if got is None or got[0] != "active" or sid == survivor:
            return None  # changed since the plan: the next run replans it
    before = head[2]
    prov = json.loads(before)
    listed = [x for x in prov.get(key, []) if isinstance(x, int)]
    prov[key] = listed + [s for s in sources if s not in listed]
    after = _json.encode(prov).decode()
    for sid in sources:
        _set_state(conn, sid, "superseded", survivor, now)
    _set_provenance(conn, survivor, after, now)
    return before, after


def _create(conn: apsw.Connection, req: Remember, provenance: dict[str, Any]) -> int | None:
    """A new memory with its provenance; None when the same text is already active there."""
    new_id, created = memories.remember(conn, req)  # redacts content and metadata
    if not created:
        return None
    conn.execute(
        "UPDATE memories SET provenance = ? WHERE id = ?",
        (_json.encode(provenance).decode(), new_id),
    )
    return new_id


def _tombstone(conn: apsw.Connection, mid: int, now: float, why: str) -> None:
    """Purge a created memory as `forget --purge` does (the indexer drops it by seq)."""
    conn.execute(
        "UPDATE memories SET state = 'forgotten', content = '', tags = '[]', "
        "metadata = ?, updated_at = ?, seq = ? WHERE id = ?",
        (
            _json.encode({"forgotten": {"at": now, "reason": why}}).decode(),
            now,
            memories.next_seq(conn),
            mid,
        ),
    )


def _at(ts: float) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC) if ts else None


def _summarize(conn: apsw.Connection, op: SummarizeCluster, now: float) -> RemApplied | None:
    for mid in [*op.members, *op.supersedes]:
        got = _row(conn, mid)
        if got is None or got[0] != "active":
            return None  # changed since the plan: the next run replans the cluster
    req = Remember(
        content=op.content,
        workspace=op.workspace,
        kind="summary",
        tags=[CLUSTER_TAG],
        importance=op.importance,
        metadata={"phase": "rem", "cluster_size": len(op.members), "writer": op.writer},
        observed_at=_at(op.observed_at),
    )
    prov: dict[str, Any] = {"memories": list(op.members)}
    if op.supersedes:
        prov["supersedes"] = list(op.supersedes)
    new_id = _create(conn, req, prov)
    if new_id is None:
        return None
    for old in op.supersedes:
        _set_state(conn, old, "superseded", new_id, now)
    data = {
        "op": msgspec.to_builtins(op),
        "created": new_id,
        "members": list(op.members),
        "superseded": list(op.supersedes),
    }
    return "summarize_cluster", list(op.members), [new_id], data


def _digest(conn: apsw.Connection, op: WriteDigest) -> RemApplied | None:
    # The run being applied: one at a time under the dreams lock, and its
    # earlier ops are already recorded (same or earlier transactions).
    run = conn.execute(
        "SELECT id FROM dream_runs WHERE phase = 'rem' AND status = 'running' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if run is None:
        return None
    run_id = int(run[0])
    done = [
        (str(name), json.loads(str(data)))
        for name, data in conn.execute(
            "SELECT op, data FROM dream_ops WHERE run_id = ? ORDER BY seq", (run_id,)
        )
    ]
    if not done:
        return None  # the run changed nothing: no digest
    from reverie.phases.rem_clusters import digest_text  # rem_clusters imports this module

    text, counts, ids = digest_text(run_id, done)
    req = Remember(
        content=text,
        workspace=op.workspace,
        kind="digest",
        tags=[DIGEST_TAG],
        importance=0.2,
        metadata={"phase": "rem", "run_id": run_id, "counts": counts},
    )
    new_id = _create(conn, req, {"memories": ids, "dream_run": run_id})
    if new_id is None:
        return None
    data = {"op": msgspec.to_builtins(op), "created": new_id}
    return "write_digest", [], [new_id], data


def apply_rem(
    conn: apsw.Connection,
    op: MergeDuplicates | Supersede | SummarizeCluster | WriteDigest,
    now: float,
) -> RemApplied | None:
    """Apply a REM op in the caller's transaction; None when its precondition no longer holds."""
    if isinstance(op, SummarizeCluster):
        return _summarize(conn, op, now)
    if isinstance(op, WriteDigest):
        return _digest(conn, op)
    if isinstance(op, MergeDuplicates):
        survivor, key, sources, name = (
            op.canonical,
            "merged_from",
            list(op.sources),
            "merge_duplicates",
        )
    else:
        survivor, key, sources, name = op.new_id, "supersedes", [op.old_id], "supersede"
    got = _absorb(conn, survivor, key, sources, now)
    if got is None:
        return None
    data = {
        "op": msgspec.to_builtins(op),
        "survivor": survivor,
        "sources": sources,
        "provenance_before": got[0],
        "provenance_after": got[1],
    }
    return name, sources, [survivor], data


def undo_rem(conn: apsw.Connection, name: str, data: dict[str, Any], now: float) -> bool:
    """Reverse one REM op exactly; False when something moved on since (that part is left)."""
    if name not in REM_OP_NAMES:
        raise ValueError(f"unknown REM op {name!r}")
    if name in ("summarize_cluster", "write_digest"):
        return _undo_created(conn, data, now)
    survivor = int(data["survivor"])
    clean = True
    for sid in data["sources"]:
        got = _row(conn, int(sid))
        if got is not None and got[0] == "superseded" and got[1] == survivor:
            _set_state(conn, int(sid), "active", None, now)
        else:
            clean = False  # forgotten or re-pointed since: leave that newer change
    head = _row(conn, survivor)
    if head is not None and head[2] == data["provenance_after"]:
        _set_provenance(conn, survivor, str(data["provenance_before"]), now)
    else:
        clean = False
    return clean


def _undo_created(conn: apsw.Connection, data: dict[str, Any], now: float) -> bool:
    """Purge a created summary or digest; bring back the summaries it superseded."""
    new_id = int(data["created"])
    got = _row(conn, new_id)
    if got is None or got[0] != "active":
        return False  # superseded or forgotten since (a later run?): leave that change
    clean = True
    for old in data.get("superseded", []):
        prev = _row(conn, int(old))
        if prev is not None and prev[0] == "superseded" and prev[1] == new_id:
            _set_state(conn, int(old), "active", None, now)
        else:
            clean = False
    _tombstone(conn, new_id, now, "undo of a REM run")
    return clean
