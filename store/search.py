"""Full-text search over active memories (FTS5, BM25).

A user's query is free text, not FTS5 syntax: it is cut into words, each word
is quoted (so `AND`, `NEAR`, `*` or a stray quote mean nothing special), and
the words are OR-ed so that BM25 ranks memories by how many rare words they
share with the query.
"""

from __future__ import annotations

import re

import apsw

from reverie.rpc.protocol import Hit
from reverie.store.memories import COLUMNS, row_to_memory

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 64


def fts_query(text: str) -> str | None:
    """The FTS5 MATCH expression for free text, or None if it has no words."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:MAX_QUERY_TERMS]
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)


def search(conn: apsw.Connection, query: str, *, workspace: str | None, limit: int) -> list[Hit]:
    match = fts_query(query)
    if match is None:
        return []
    cols = ", ".join(f"m.{c.strip()}" for c in COLUMNS.split(","))
    where = "memories_fts MATCH ? AND m.state = 'active' AND m.tier != 'archived'"
    args: list[object] = [match]
    if workspace is not None:
        where += " AND m.workspace = ?"
        args.append(workspace)
    rows = conn.execute(
        f"SELECT {cols}, bm25(memories_fts) AS rank FROM memories_fts "
        f"JOIN memories m ON m.id = memories_fts.rowid WHERE {where} ORDER BY rank LIMIT ?",
        (*args, limit),
    ).fetchall()
    # bm25() is negative, better is lower; report a positive score, higher is better.
    return [Hit(memory=row_to_memory(r[:-1]), score=-float(r[-1])) for r in rows]
