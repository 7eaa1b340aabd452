"""The typed operations a phase plans, and how each one is applied and undone.

A plan is a list of these Structs: pure data, so a dry run can return it over
RPC. Applying an op checks its precondition against the row as it is *now*
(the plan was read earlier, maybe on another connection): an op whose
memory changed in between is skipped, never forced. What an applied op
changed is returned as an `Applied` record holding the exact before-state,
which the ledger stores in `dream_ops.data` and `undo_op` restores.

Every write to a memory takes a new `seq` (memories.next_seq) and a new
`updated_at`, so the vector indexer follows it; undo moves both forward too.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import apsw
import msgspec
from reverie.phases.ops_rem import (  # REM ops (phases/ops_rem.py)
    REM_OP_NAMES,
    REM_OPS,
    MergeDuplicates,
    SummarizeCluster,
    Supersede,
    WriteDigest,
    apply_rem,
    undo_rem,
)
from reverie.rpc.protocol import Remember
from reverie.store import memories
from reverie.store.versions import PruneVersions, apply_prune, undo_prune  # memory versions

Tier = Literal["short", "long", "archived"]
_json = msgspec.json.Encoder()


class SetTier(msgspec.Struct, tag="set_tier", kw_only=True, frozen=True):
    """Move an active memory between tiers; skipped unless it is still in `from_tier`."""

    memory_id: int
    from_tier: Tier
    to_tier: Tier


class SetMeta(msgspec.Struct, tag="set_meta", kw_only=True, frozen=True):
    """Set one top-level metadata key of an active memory (None removes the key)."""

    memory_id: int
    key: str
    value: Any = None


class CreateSummary(msgspec.Struct, tag="create_summary", kw_only=True, frozen=True):
    """Write a derived memory over `sources` and mark each source with its id.

    Provenance lists the sources (`memories`) and their events, so no source
    is lost. Skipped when a source is no longer active or already marked.
    """

    workspace: str
    content: str
    sources: list[int]
    kind: str = "summary"
    tags: list[str] = []
    importance: float = 0.6
    observed_at: float = 0.0
    metadata: dict[str, Any] = {}
    mark_key: str = "summarized_by"


Op = (
    SetTier
    | SetMeta
    | CreateSummary
    | MergeDuplicates  # REM: ops_rem.py
    | Supersede  # REM: ops_rem.py
    | SummarizeCluster  # REM: ops_rem.py
    | WriteDigest  # REM: ops_rem.py
    | PruneVersions  # memory versions: store/versions.py
)
OP_NAMES: dict[type[Any], str] = {
    SetTier: "set_tier",
    SetMeta: "set_meta",
    CreateSummary: "create_summary",
    MergeDuplicates: "merge_duplicates",  # REM
    Supersede: "supersede",  # REM
    SummarizeCluster: "summarize_cluster",  # REM
    WriteDigest: "write_digest",  # REM
    PruneVersions: "prune_versions",  # memory versions
}


class Applied(msgspec.Struct, kw_only=True):
    """What one applied op changed: a `dream_ops` row without its run and seq."""

    op: str
    before_ids: list[int]
    after_ids: list[int]
    data: dict[str, Any]


def _meta(conn: apsw.Connection, memory_id: int) -> tuple[str, dict[str, Any]] | None:
    row = conn.execute("SELECT state, metadata FROM memories WHERE id = ?", (memory_id,)).fetchone()
    if row is None:
        return None
    return str(row[0]), json.loads(str(row[1]))


def _key_state(meta: dict[str, Any], key: str) -> dict[str, Any]:
    """A key's before-state: absent, or present with its value (which may be null)."""
    return {"present": True, "value": meta[key]} if key in meta else {"present": False}


def _write_meta(conn: apsw.Connection, memory_id: int, meta: dict[str, Any], now: float) -> None:
    conn.execute(
        "UPDATE memories SET metadata = ?, updated_at = ?, seq = ? WHERE id = ?",
        (_json.encode(meta).decode(), now, memories.next_seq(conn), memory_id),
    )


def _set_key(
    conn: apsw.Connection, memory_id: int, key: str, state: dict[str, Any], now: float
) -> None:
    got = _meta(conn, memory_id)
    if got is None:
        return
    meta = got[1]
    if state.get("present"):
        meta[key] = state.get("value")
    else:
        meta.pop(key, None)
    _write_meta(conn, memory_id, meta, now)


def apply_op(conn: apsw.Connection, op: Op, now: float) -> Applied | None:
    """Apply `op` in the caller's transaction; None when its precondition no longer holds."""
    if isinstance(op, SetTier):
        row = conn.execute(
            "SELECT tier FROM memories WHERE id = ? AND state = 'active'", (op.memory_id,)
        ).fetchone()
        if row is None or row[0] != op.from_tier or op.from_tier == op.to_tier:
            return None
        conn.execute(
            "UPDATE memories SET tier = ?, updated_at = ?, seq = ? WHERE id = ?",
            (op.to_tier, now, memories.next_seq(conn), op.memory_id),
        )
        data = {"op": msgspec.to_builtins(op), "before": {"tier": op.from_tier}}
        return Applied(
            op="set_tier", before_ids=[op.memory_id], after_ids=[op.memory_id], data=data
        )
    if isinstance(op, SetMeta):
        got = _meta(conn, op.memory_id)
        if got is None or got[0] != "active":
            return None
        meta = got[1]
        before = _key_state(meta, op.key)
        after = {"present": op.value is not None, "value": op.value}
        if before == after or (not before["present"] and not after["present"]):
            return None
        _set_key(conn, op.memory_id, op.key, after, now)
        data = {"op": msgspec.to_builtins(op), "before": before}
        return Applied(
            op="set_meta", before_ids=[op.memory_id], after_ids=[op.memory_id], data=data
        )
    if isinstance(op, REM_OPS):  # REM (phases/ops_rem.py)
        rem = apply_rem(conn, op, now)
        if rem is None:
            return None
        return Applied(op=rem[0], before_ids=rem[1], after_ids=rem[2], data=rem[3])
    if isinstance(op, PruneVersions):  # memory versions (store/versions.py)
        pruned = apply_prune(conn, op)
        if pruned is None:
            return None
        return Applied(op=pruned[0], before_ids=pruned[1], after_ids=pruned[2], data=pruned[3])
    return _create_summary(conn, op, now)


def _create_summary(conn: apsw.Connection, op: CreateSummary, now: float) -> Applied | None:
    befores: dict[str, dict[str, Any]] = {}
    events: list[int] = []
    for sid in op.sources:
        got = _meta(conn, sid)
        if got is None or got[0] != "active" or op.mark_key in got[1]:
            return None  # a source changed since the plan: the next run replans it
        befores[str(sid)] = _key_state(got[1], op.mark_key)
        prov = json.loads(
            str(conn.execute("SELECT provenance FROM memories WHERE id = ?", (sid,)).get)
        )
        events += [e for e in prov.get("events", []) if isinstance(e, int)]
    observed = dt.datetime.fromtimestamp(op.observed_at, dt.UTC) if op.observed_at else None
    req = Remember(
        content=op.content,
        workspace=op.workspace,
        kind=op.kind,
        tags=op.tags,
        importance=op.importance,
        metadata=op.metadata,
        observed_at=observed,
    )
    new_id, created = memories.remember(conn, req)
    if not created:
        return None  # the same text is already an active memory: nothing to add
    provenance = {"memories": list(op.sources), "events": events}
    conn.execute(
        "UPDATE memories SET provenance = ? WHERE id = ?",
        (_json.encode(provenance).decode(), new_id),
    )
    for sid in op.sources:
        _set_key(conn, sid, op.mark_key, {"present": True, "value": new_id}, now)
    data = {"op": msgspec.to_builtins(op), "created": new_id, "sources_before": befores}
    return Applied(op="create_summary", before_ids=list(op.sources), after_ids=[new_id], data=data)


def undo_op(
    conn: apsw.Connection, name: str, data: dict[str, Any], now: float, run_id: int
) -> bool:
    """Reverse one applied op exactly; False when the memory moved on since (left as it is)."""
    if name in REM_OP_NAMES:  # REM (phases/ops_rem.py)
        return undo_rem(conn, name, data, now)
    if name == "prune_versions":  # memory versions (store/versions.py)
        return undo_prune(conn, data)
    op = data["op"]
    if name == "set_tier":
        row = conn.execute("SELECT tier FROM memories WHERE id = ?", (op["memory_id"],)).fetchone()
        if row is None or row[0] != op["to_tier"]:
            return False
        conn.execute(
            "UPDATE memories SET tier = ?, updated_at = ?, seq = ? WHERE id = ?",
            (data["before"]["tier"], now, memories.next_seq(conn), op["memory_id"]),
        )
        return True
    if name == "set_meta":
        got = _meta(conn, op["memory_id"])
        if got is None or got[1].get(op["key"]) != op["value"]:
            return False
        _set_key(conn, op["memory_id"], op["key"], data["before"], now)
        return True
    if name == "create_summary":
        new_id = int(data["created"])
        for sid, before in data["sources_before"].items():
            got = _meta(conn, int(sid))
            if got is not None and got[1].get(op["mark_key"]) == new_id:
                _set_key(conn, int(sid), op["mark_key"], before, now)
        # The summary is derived data: purge it (a tombstone with no text, as
        # `forget --purge` leaves), so the indexer drops its vector by seq.
        conn.execute(
            "UPDATE memories SET state = 'forgotten', content = '', tags = '[]', "
            "metadata = ?, updated_at = ?, seq = ? WHERE id = ?",
            (
                _json.encode(
                    {"forgotten": {"at": now, "reason": f"undo of dream run {run_id}"}}
                ).decode(),
                now,
                memories.next_seq(conn),
                new_id,
            ),
        )
        return True
    raise ValueError(f"unknown dream op {name!r}")
