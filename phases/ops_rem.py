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
"""

from __future__ import annotations

import json
from typing import Any

import apsw
import msgspec
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


REM_OPS = (MergeDuplicates, Supersede)
REM_OP_NAMES = frozenset({"merge_duplicates", "supersede"})


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


def apply_rem(
    conn: apsw.Connection, op: MergeDuplicates | Supersede, now: float
) -> RemApplied | None:
    """Apply a REM op in the caller's transaction; None when its precondition no longer holds."""
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
