"""Memories: the SQL that creates, reads, forgets, exports and imports them.

Functions here take an APSW connection and run inside whatever transaction the
caller holds (the writer's group commit, or a reader's snapshot).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import time
from typing import Any

import apsw
import msgspec
from reverie.errors import InvalidParams, NotFound
from reverie.rpc.protocol import Memory, MemoryRecord, Remember
from reverie.store.redaction import redact
from reverie.store.redaction_objects import redact_obj

COLUMNS = (
    "id, uid, workspace, kind, content, tags, importance, tier, state, superseded_by, "
    "provenance, created_at, observed_at, updated_at, last_recalled_at, recall_count, "
    "distinct_queries, content_hash, metadata"
)
# The same columns qualified for queries that join memories to itself.
_M_COLUMNS = ", ".join(f"m.{c.strip()}" for c in COLUMNS.split(","))
_json = msgspec.json.Encoder()
_WS = re.compile(r"\s+")
_MARKERS = re.compile(r"\[REDACTED:[^\]]*\]")  # what redaction leaves in place of a secret


def json_text(value: object, what: str) -> str:
    """JSON for a JSON column; msgpack can carry values JSON cannot (Ext, non-str keys)."""
    try:
        return _json.encode(value).decode()
    except (TypeError, ValueError) as e:
        raise InvalidParams(f"{what} must be JSON-compatible: {e}") from None


def content_hash(content: str) -> str:
    """Hash of the content with whitespace folded: the key for deduplication."""
    norm = _WS.sub(" ", content).strip()
    return hashlib.sha256(norm.encode()).hexdigest()[:32]


def _ts(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def _ts_opt(value: float | None) -> dt.datetime | None:
    return None if value is None else _ts(value)


def _epoch(value: dt.datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def row_to_memory(row: tuple[Any, ...]) -> Memory:
    (
        mid,
        uid,
        ws,
        kind,
        content,
        tags,
        imp,
        tier,
        state,
        sup,
        prov,
        created,
        observed,
        updated,
        recalled,
        rcount,
        dq,
        chash,
        meta,
    ) = row
    return Memory(
        id=mid,
        uid=uid,
        workspace=ws,
        kind=kind,
        # Redacted again on the way out: rows stored before a pattern existed
        # (or imported from elsewhere) never leak through get, search or export.
        content=redact(content),
        tags=json.loads(tags),
        importance=imp,
        tier=tier,
        state=state,
        superseded_by=sup,
        provenance=json.loads(prov),
        created_at=_ts(created),
        observed_at=_ts(observed),
        updated_at=_ts(updated),
        last_recalled_at=_ts_opt(recalled),
        recall_count=rcount,
        distinct_queries=dq,
        content_hash=chash,
        metadata=redact_obj(json.loads(meta)),
    )


def next_seq(conn: apsw.Connection) -> int:
    """The next change sequence number (the writer is the only caller, in order)."""
    return int(conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM memories").get)


def remember(conn: apsw.Connection, req: Remember) -> tuple[int, bool]:
    """Insert a memory, or return the active one with the same content in its workspace.

    Secrets and <private> spans are removed before anything is stored, so
    the hash, the full-text index and the vectors never see them either.
    """
    content = redact(req.content)
    metadata = redact_obj(req.metadata) if req.metadata else req.metadata
    if content != req.content or metadata != req.metadata:  # something was removed
        if not _MARKERS.sub("", content).strip():
            raise InvalidParams("the memory is empty once private spans and secrets are removed")
        req = msgspec.structs.replace(req, content=content, metadata=metadata)
    chash = content_hash(req.content)
    existing = conn.execute(
        "SELECT id FROM memories WHERE workspace = ? AND content_hash = ? AND state = 'active'",
        (req.workspace, chash),
    ).get
    if existing is not None:
        return int(existing), False
    now = time.time()
    observed = _epoch(req.observed_at) if req.observed_at else now
    tags = list(dict.fromkeys(req.tags))
    conn.execute(
        "INSERT INTO memories (uid, workspace, kind, content, tags, importance, tier, "
        "created_at, observed_at, updated_at, content_hash, metadata, seq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            os.urandom(16).hex(),  # a random 128-bit uid (uuid4 costs 5x more)
            req.workspace,
            req.kind,
            req.content,
            _json.encode(tags).decode(),
            req.importance,
            req.tier,
            now,
            observed,
            now,
            chash,
            json_text(req.metadata, "metadata"),
            next_seq(conn),
        ),
    )
    return conn.last_insert_rowid(), True


def get(conn: apsw.Connection, memory_id: int) -> Memory:
    row = conn.execute(f"SELECT {COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
    if row is None:
        raise NotFound(f"no memory with id {memory_id}", data={"id": memory_id})
    return row_to_memory(row)


def forget(conn: apsw.Connection, memory_id: int, *, purge: bool, reason: str) -> bool:
    """Mark a memory forgotten (a tombstone). With purge, also erase its text.

    The row stays so that provenance and ledgers keep pointing at something,
    and so that an import of an old export does not bring it back.
    Returns whether the content was purged.
    """
    row = conn.execute("SELECT state, metadata FROM memories WHERE id = ?", (memory_id,)).fetchone()
    if row is None:
        raise NotFound(f"no memory with id {memory_id}", data={"id": memory_id})
    meta = json.loads(row[1])
    meta["forgotten"] = {"at": time.time(), "reason": reason}
    sets = "state = 'forgotten', updated_at = ?, metadata = ?, seq = ?"
    if purge:
        sets += ", content = '', tags = '[]'"
        # memory versions: the snapshots of its earlier text go with it (store/versions.py)
        conn.execute("DELETE FROM memory_versions WHERE memory_id = ?", (memory_id,))
    conn.execute(
        f"UPDATE memories SET {sets} WHERE id = ?",
        (time.time(), _json.encode(meta).decode(), next_seq(conn), memory_id),
    )
    return purge


def export_page(
    conn: apsw.Connection,
    *,
    workspace: str | None,
    after_id: int,
    limit: int,
    include_forgotten: bool,
) -> tuple[list[MemoryRecord], int | None]:
    """One page of memories in portable form, in id order."""
    where = ["m.id > ?"]
    args: list[Any] = [after_id]
    if workspace is not None:
        where.append("m.workspace = ?")
        args.append(workspace)
    if not include_forgotten:
        where.append("m.state != 'forgotten'")
    rows = conn.execute(
        f"SELECT {_M_COLUMNS}, s.uid FROM memories m "
        f"LEFT JOIN memories s ON s.id = m.superseded_by "
        f"WHERE {' AND '.join(where)} ORDER BY m.id LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    records = [_to_record(row_to_memory(r[:-1]), _opt_str(r[-1])) for r in rows]
    # The last id of a full page is where the next page starts.
    next_after = int(rows[-1][0]) if more else None  # type: ignore[arg-type]
    return records, next_after


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _to_record(m: Memory, superseded_uid: str | None) -> MemoryRecord:
    """The portable form: the same fields, with the supersession link as a uid."""
    shared = {f: getattr(m, f) for f in MemoryRecord.__struct_fields__ if f != "superseded_by"}
    return MemoryRecord(**shared, superseded_by=superseded_uid)


def import_records(conn: apsw.Connection, records: list[MemoryRecord]) -> tuple[int, int]:
    """Insert records whose uid is new; skip the rest. Returns (added, skipped)."""
    added = skipped = 0
    records = [
        msgspec.structs.replace(
            r,
            content=redact(r.content),
            metadata=redact_obj(r.metadata),
            provenance=redact_obj(r.provenance),
        )
        for r in records
    ]
    for rec in records:
        if rec.state != "forgotten" and not rec.content:
            raise InvalidParams(f"record {rec.uid} has empty content")
        if conn.execute("SELECT 1 FROM memories WHERE uid = ?", (rec.uid,)).get is not None:
            skipped += 1
            continue
        conn.execute(
            "INSERT INTO memories (uid, workspace, kind, content, tags, importance, tier, state, "
            "provenance, created_at, observed_at, updated_at, last_recalled_at, recall_count, "
            "distinct_queries, content_hash, metadata, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.uid,
                rec.workspace,
                rec.kind,
                rec.content,
                _json.encode(rec.tags).decode(),
                rec.importance,
                rec.tier,
                rec.state,
                json_text(rec.provenance, "provenance"),
                _epoch(rec.created_at),
                _epoch(rec.observed_at),
                _epoch(rec.updated_at),
                _epoch(rec.last_recalled_at) if rec.last_recalled_at else None,
                rec.recall_count,
                rec.distinct_queries,
                content_hash(rec.content),  # of the redacted text
                json_text(rec.metadata, "metadata"),
                next_seq(conn),
            ),
        )
        added += 1
    # Second pass: supersession links by uid, now that every record has a row.
    for rec in records:
        if rec.superseded_by:
            conn.execute(
                "UPDATE memories SET superseded_by = (SELECT id FROM memories WHERE uid = ?) "
                "WHERE uid = ? AND superseded_by IS NULL",
                (rec.superseded_by, rec.uid),
            )
    return added, skipped


def counts(conn: apsw.Connection) -> tuple[dict[str, int], int]:
    """Memories per state (and per tier for active ones), and the number of workspaces."""
    out: dict[str, int] = {"total": 0}
    for state, tier, n in conn.execute(
        "SELECT state, tier, count(*) FROM memories GROUP BY state, tier"
    ):
        out["total"] += n
        out[state] = out.get(state, 0) + n
        if state == "active":
            out[f"tier_{tier}"] = n
    workspaces = int(conn.execute("SELECT count(DISTINCT workspace) FROM memories").get or 0)
    return out, workspaces
