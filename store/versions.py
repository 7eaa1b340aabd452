"""Memory versions: overwrite a memory in place, keeping a snapshot of what it was.

`update` is the one path that changes a memory's content after it was
written. The memory keeps its id (provenance, recalls and ledgers still
point at it); the row as it was is copied to `memory_versions` first, with
a version number that grows per memory. The new content is redacted like
`remember`'s, gets a new content_hash and a new `seq`, so the FTS triggers
and the vector indexer (which re-embeds a row whose hash changed) follow.

Deep sleep prunes snapshots (`PruneVersions`, an undoable dream op): per
memory it keeps the newest `versions_keep`, and drops an older one only once
it was replaced more than `versions_retention_days` ago. Undo re-inserts
the pruned rows, which the op's `dream_ops.data` holds, except for a
memory that was purged since (erased text never comes back).

`forget --purge` and deep sleep's tombstone purge delete a memory's
snapshots with its text. Export/import carry the current memories only,
not their snapshots: versions are this store's local history.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import apsw
import msgspec
from reverie.errors import Conflict, InvalidParams, NotFound
from reverie.rpc.proto_versions import MemoryVersion, Update, UpdateResult, VersionsResult
from reverie.store import memories
from reverie.store.redaction import redact
from reverie.store.redaction_objects import redact_obj

DAY = 86400.0
_json = msgspec.json.Encoder()
_V_COLUMNS = (
    "memory_id, version, content, tags, importance, pinned, metadata, content_hash, "
    "written_at, replaced_at, reason"
)


def _dumps(value: object) -> str:
    return _json.encode(value).decode()


def update(conn: apsw.Connection, req: Update, now: float | None = None) -> UpdateResult:
    """Overwrite an active memory in the caller's transaction, snapshotting it first."""
    now = time.time() if now is None else now
    mid = req.memory_id
    row = conn.execute(
        "SELECT workspace, content, tags, importance, state, superseded_by, metadata, "
        "content_hash, updated_at FROM memories WHERE id = ?",
        (mid,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no memory with id {mid}", data={"id": mid})
    ws, content, tags, importance, state, sup, meta_text, chash, written = row
    if state != "active":
        by = f" by #{sup}" if sup is not None else ""
        raise Conflict(
            f"memory #{mid} is {state}{by}: only an active memory can be updated",
            data={"id": mid, "state": state, "superseded_by": sup},
        )
    new_content, new_hash = str(content), str(chash)
    if req.content is not None:
        new_content = redact(req.content)
        if not memories._MARKERS.sub("", new_content).strip():
            raise InvalidParams("the memory is empty once private spans and secrets are removed")
        new_hash = memories.content_hash(new_content)
        if new_hash != chash:
            dup = conn.execute(
                "SELECT id FROM memories WHERE workspace = ? AND content_hash = ? "
                "AND state = 'active' AND id != ?",
                (ws, new_hash, mid),
            ).get
            if dup is not None:
                raise Conflict(
                    f"memory #{dup} already holds this content in workspace {ws!r}",
                    data={"id": mid, "duplicate_of": dup},
                )
    old_meta: dict[str, Any] = json.loads(str(meta_text))
    meta = dict(old_meta)
    for key, value in redact_obj(req.metadata or {}).items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    if req.pinned is True:
        meta["pinned"] = True
    elif req.pinned is False:
        meta.pop("pinned", None)
    new_importance = float(importance) if req.importance is None else req.importance
    new_meta_text = memories.json_text(meta, "metadata")
    if new_content == content and new_importance == importance and meta == old_meta:
        return UpdateResult(id=mid, changed=False, version=None, content_hash=str(chash))
    version = int(
        conn.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM memory_versions WHERE memory_id = ?",
            (mid,),
        ).get
    )
    conn.execute(
        f"INSERT INTO memory_versions ({_V_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            mid,
            version,
            content,
            tags,
            importance,
            int(bool(old_meta.get("pinned"))),
            meta_text,
            chash,
            written,
            now,
            redact(req.reason),
        ),
    )
    conn.execute(
        "UPDATE memories SET content = ?, importance = ?, metadata = ?, content_hash = ?, "
        "updated_at = ?, seq = ? WHERE id = ?",
        (new_content, new_importance, new_meta_text, new_hash, now, memories.next_seq(conn), mid),
    )
    return UpdateResult(id=mid, changed=True, version=version, content_hash=new_hash)


def _ts(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def list_versions(conn: apsw.Connection, memory_id: int) -> VersionsResult:
    """A memory's snapshots, newest first (redacted again on the way out)."""
    if conn.execute("SELECT 1 FROM memories WHERE id = ?", (memory_id,)).get is None:
        raise NotFound(f"no memory with id {memory_id}", data={"id": memory_id})
    out = [
        MemoryVersion(
            memory_id=int(r[0]),
            version=int(r[1]),
            content=redact(str(r[2])),
            tags=json.loads(str(r[3])),
            importance=float(r[4]),
            pinned=bool(r[5]),
            metadata=redact_obj(json.loads(str(r[6]))),
            content_hash=str(r[7]),
            written_at=_ts(float(r[8])),
            replaced_at=_ts(float(r[9])),
            reason=str(r[10]),
        )
        for r in conn.execute(
            f"SELECT {_V_COLUMNS} FROM memory_versions WHERE memory_id = ? ORDER BY version DESC",
            (memory_id,),
        )
    ]
    current = (out[0].version if out else 0) + 1
    return VersionsResult(memory_id=memory_id, current_version=current, versions=out)


def delete_for(conn: apsw.Connection, where_ids_sql: str, args: tuple[Any, ...]) -> None:
    """Drop the snapshots of the memories `where_ids_sql` selects (a purge erases them too)."""
    conn.execute(f"DELETE FROM memory_versions WHERE memory_id IN ({where_ids_sql})", args)


# --- deep sleep's retention: an undoable dream op ----------------------------


class PruneVersions(msgspec.Struct, tag="prune_versions", kw_only=True, frozen=True):
    """Delete some snapshots of one memory; undo re-inserts them."""

    memory_id: int
    versions: list[int]


def prunable(
    conn: apsw.Connection, now: float, *, keep: int, retention_days: float
) -> list[PruneVersions]:
    """Snapshots beyond the newest `keep` per memory and replaced before the retention age."""
    cutoff = now - retention_days * DAY
    by_memory: dict[int, list[int]] = {}
    for mid, version in conn.execute(
        "SELECT memory_id, version FROM (SELECT memory_id, version, replaced_at, "
        "row_number() OVER (PARTITION BY memory_id ORDER BY version DESC) AS rn "
        "FROM memory_versions) WHERE rn > ? AND replaced_at < ? ORDER BY memory_id, version",
        (keep, cutoff),
    ):
        by_memory.setdefault(int(mid), []).append(int(version))
    return [PruneVersions(memory_id=m, versions=v) for m, v in by_memory.items()]


def totals(conn: apsw.Connection) -> tuple[int, int]:
    """(snapshots, memories that have any): for the run's notes."""
    row = conn.execute("SELECT count(*), count(DISTINCT memory_id) FROM memory_versions").get
    assert isinstance(row, tuple)
    return int(row[0]), int(row[1])


def apply_prune(
    conn: apsw.Connection, op: PruneVersions
) -> tuple[str, list[int], list[int], dict[str, Any]] | None:
    """Delete the op's snapshots that still exist; None when none does."""
    marks = ", ".join("?" * len(op.versions))
    where = f"memory_id = ? AND version IN ({marks})"
    rows = conn.execute(
        f"SELECT {_V_COLUMNS} FROM memory_versions WHERE {where} ORDER BY version",
        (op.memory_id, *op.versions),
    ).fetchall()
    if not rows:
        return None
    conn.execute(f"DELETE FROM memory_versions WHERE {where}", (op.memory_id, *op.versions))
    # The rows themselves are the before-state: undo puts them back as they were.
    data = {"op": msgspec.to_builtins(op), "rows": [list(r) for r in rows]}
    return "prune_versions", [op.memory_id], [op.memory_id], data


def undo_prune(conn: apsw.Connection, data: dict[str, Any]) -> bool:
    """Re-insert the pruned snapshots; False if the memory was purged since."""
    mid = int(data["op"]["memory_id"])
    row = conn.execute("SELECT state, content FROM memories WHERE id = ?", (mid,)).fetchone()
    if row is None or (row[0] == "forgotten" and row[1] == ""):
        return False
    for r in data["rows"]:
        conn.execute(
            f"INSERT OR IGNORE INTO memory_versions ({_V_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(r),
        )
    return True
