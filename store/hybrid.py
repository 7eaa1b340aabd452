"""Hybrid search: full text (BM25) and vector neighbours, fused, filtered, boosted.

1. Candidates: the lexical ranking (store/search.py: BM25 over content
   words, with the named-date boost) and the vector neighbours of the query
   (the HNSW index), each `candidates` long.
2. Fusion, one of:
   - ``rrf``: reciprocal rank fusion, sum of weight / (k + rank);
   - ``score``: each side's scores scaled to [0, 1] by its best, then a
     weighted sum.
   The weights and k are in the [search] config; the defaults were chosen on
   the LoCoMo development half (README, performance section).
3. Context: fused scores spread to neighbouring memories of the same
   session (store/search.py), so a reply is found through its question.
4. Filters (kinds, tags, time range, archived) go into the lexical search
   itself, which stays bounded with them; vector and neighbour candidates
   are checked against them in SQLite.
5. Boosts: recency and importance multiply the score.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import apsw
from reverie.daemon.config import SearchConfig
from reverie.rpc.protocol import Explain, Hit, Search
from reverie.store import search as lexical
from reverie.store.indexer import Indexer

RECENCY_HALF_LIFE_S = 30 * 86400.0
FILTER_BATCH = 200


@dataclass(slots=True)
class _Candidate:
    id: int
    explain: Explain = field(default_factory=Explain)
    score: float = 0.0
    # Read with the filters, for the boosts: only the hits returned are fetched whole.
    observed_at: float = 0.0
    importance: float = 0.0


@dataclass(slots=True)
class Outcome:
    hits: list[Hit]
    mode: str
    notes: list[str]


def run(
    conn: apsw.Connection, req: Search, *, cfg: SearchConfig, indexer: Indexer | None
) -> Outcome:
    """One search, blocking (a reader thread runs it with its own connection)."""
    notes: list[str] = []
    vec = vector_side(conn, req, cfg=cfg, indexer=indexer, notes=notes)
    lex = lexical_side(conn, req, cfg=cfg)
    return combine(conn, req, cfg=cfg, lex=lex, vec=vec, notes=notes)


def vector_side(
    conn: apsw.Connection,
    req: Search,
    *,
    cfg: SearchConfig,
    indexer: Indexer | None,
    notes: list[str],
) -> list[tuple[int, float]] | None:
    """The vector neighbours of the query, or None (lexical only; why goes in `notes`).

    The part of a search that needs the daemon's vector index; lexical_side()
    and combine() do the rest with SQLite alone, so a search worker can run them.
    """
    mode = req.mode or cfg.mode
    if mode == "lexical" or lexical.fts_query(req.query) is None:
        return None
    return _vector(conn, req, max(cfg.candidates, req.limit), indexer, notes)


def lexical_side(
    conn: apsw.Connection, req: Search, *, cfg: SearchConfig
) -> dict[int, float] | None:
    """The lexical candidates (None for a vector search, or a query without words).

    Independent of the vector side: a search worker computes it while the
    daemon looks the query's neighbours up.
    """
    mode = req.mode or cfg.mode
    if mode == "vector" or lexical.fts_query(req.query) is None:
        return None
    return _lexical(conn, req, max(cfg.candidates, req.limit), _filters_of(req))


def combine(
    conn: apsw.Connection,
    req: Search,
    *,
    cfg: SearchConfig,
    lex: dict[int, float] | None,
    vec: list[tuple[int, float]] | None,
    notes: list[str],
) -> Outcome:
    """Both sides fused, spread to context, filtered and boosted: the hits."""
    mode = req.mode or cfg.mode
    if lexical.fts_query(req.query) is None:
        return Outcome(hits=[], mode=mode, notes=["the query has no words"])
    if vec is None:
        mode = "lexical"  # asked for, or the vector side could not answer
    if mode == "vector":
        lex = {}
    elif lex is None:  # a vector search that fell back to lexical
        lex = _lexical(conn, req, max(cfg.candidates, req.limit), _filters_of(req))
    cands = _fuse(lex, vec, cfg)
    _context(conn, cands)
    ranked = sorted(cands.values(), key=lambda c: c.score, reverse=True)
    kept = _filtered(conn, req, ranked)
    hits = _hits(conn, req, kept)
    return Outcome(hits=hits, mode=mode, notes=notes)


def _filters_of(req: Search) -> tuple[str, list[Any]] | None:
    # Filters go into the lexical search itself (it stays bounded with them);
    # vector and neighbour candidates are checked against them afterwards.
    return _where(req) if _has_filters(req) else None


def _lexical(
    conn: apsw.Connection, req: Search, want: int, filters: tuple[str, list[Any]] | None
) -> dict[int, float]:
    return lexical.lexical_scores(
        conn, req.query, workspace=req.workspace, limit=want, filters=filters
    )


# -- candidates ------------------------------------------------------------------


def _vector(
    conn: apsw.Connection, req: Search, k: int, indexer: Indexer | None, notes: list[str]
) -> list[tuple[int, float]] | None:
    if indexer is None or not indexer.ready:
        notes.append("the vector index is not ready yet: lexical results only")
        return None

    def doc_freq(terms: list[str]) -> tuple[Mapping[str, int], int]:
        return lexical.document_frequencies(conn, terms), lexical.index_totals(conn)[0]

    found = indexer.neighbours(req.query, k, workspace=req.workspace, doc_freq=doc_freq)
    if found is None:
        notes.append("the query could not be embedded: lexical results only")
        return None
    return list(zip(found.ids.tolist(), found.similarities.tolist(), strict=True))


def _fuse(
    lex: dict[int, float], vec: list[tuple[int, float]] | None, cfg: SearchConfig
) -> dict[int, _Candidate]:
    cands: dict[int, _Candidate] = {}
    lex_ranked = sorted(lex.items(), key=lambda kv: kv[1], reverse=True)
    top_lex = lex_ranked[0][1] if lex_ranked else 0.0
    for rank, (mid, score) in enumerate(lex_ranked, 1):
        c = cands.setdefault(mid, _Candidate(mid))
        c.explain.lexical_rank, c.explain.lexical_score = rank, score
        if vec is None:
            c.score = score  # lexical only: keep BM25's own scale, nothing to fuse
        else:
            c.score += _part(cfg, cfg.lexical_weight, rank, score / top_lex if top_lex > 0 else 0.0)
    for rank, (mid, sim) in enumerate(vec or [], 1):
        c = cands.setdefault(mid, _Candidate(mid))
        c.explain.vector_rank, c.explain.vector_score = rank, sim
        c.score += _part(cfg, cfg.vector_weight, rank, max(0.0, sim))
    for c in cands.values():
        c.explain.fused = c.score
    return cands


def _rounded(ex: Explain) -> Explain:
    """Explain's figures to 6 decimals: only for the hits returned (round() is not free)."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 6)

    return Explain(
        lexical_rank=ex.lexical_rank,
        lexical_score=r(ex.lexical_score),
        vector_rank=ex.vector_rank,
        vector_score=r(ex.vector_score),
        fused=round(ex.fused, 6),
        neighbour=round(ex.neighbour, 6),
        boost=round(ex.boost, 6),
    )


def _part(cfg: SearchConfig, weight: float, rank: int, normalised: float) -> float:
    if cfg.fusion == "rrf":
        return weight / (cfg.rrf_k + rank)
    return weight * normalised


def _context(conn: apsw.Connection, cands: dict[int, _Candidate]) -> None:
    if not cands:
        return
    spread = lexical.spread_to_neighbours(conn, {mid: c.score for mid, c in cands.items()})
    for mid, score in spread.items():
        c = cands.get(mid)
        if c is None:
            c = cands[mid] = _Candidate(mid)
        c.explain.neighbour = score - c.score
        c.score = score


# -- filters and boosts ------------------------------------------------------------


def _has_filters(req: Search) -> bool:
    return bool(req.kinds or req.tags or req.since or req.until or req.include_archived)


def _where(req: Search) -> tuple[str, list[Any]]:
    sql = ["m.state = 'active'"]
    args: list[Any] = []
    if not req.include_archived:
        sql.append("m.tier != 'archived'")
    if req.workspace is not None:
        # `+`: these filters check given ids (and join FTS matches); with a
        # bare `m.workspace = ?` SQLite's planner walked the whole workspace
        # through memories_by_hash instead (37k rows for a 37% workspace: 5 ms).
        sql.append("+m.workspace = ?")
        args.append(req.workspace)
    if req.kinds:
        sql.append(f"m.kind IN ({','.join('?' * len(req.kinds))})")
        args.extend(req.kinds)
    for tag in req.tags:
        sql.append("EXISTS (SELECT 1 FROM json_each(m.tags) WHERE value = ?)")
        args.append(tag)
    if req.since is not None:
        sql.append("m.observed_at >= ?")
        args.append(_epoch(req.since))
    if req.until is not None:
        sql.append("m.observed_at < ?")
        args.append(_epoch(req.until))
    return " AND ".join(sql), args


def _epoch(value: dt.datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def _filtered(conn: apsw.Connection, req: Search, ranked: list[_Candidate]) -> list[_Candidate]:
    """The candidates that pass the filters, in order, as many as are needed."""
    where, args = _where(req)
    kept: list[_Candidate] = []
    for start in range(0, len(ranked), FILTER_BATCH):
        chunk = ranked[start : start + FILTER_BATCH]
        marks = ",".join("?" * len(chunk))
        ok = {
            int(r[0]): r
            for r in conn.execute(
                f"SELECT m.id, m.observed_at, m.importance FROM memories m "
                f"WHERE m.id IN ({marks}) AND {where}",
                (*(c.id for c in chunk), *args),
            )
        }
        for c in chunk:
            row = ok.get(c.id)
            if row is not None:
                c.observed_at, c.importance = float(row[1]), float(row[2])
                kept.append(c)
        if len(kept) >= req.limit and not (req.recency_boost or req.importance_boost):
            break
    return kept


def _hits(conn: apsw.Connection, req: Search, kept: list[_Candidate]) -> list[Hit]:
    """The best `limit` after the boosts; only those are read whole from SQLite."""
    if not kept:
        return []
    if req.recency_boost or req.importance_boost:
        now = time.time()
        for c in kept:
            boost = 1.0
            if req.recency_boost:
                age = max(0.0, now - c.observed_at)
                boost *= 1 + req.recency_boost * math.pow(0.5, age / RECENCY_HALF_LIFE_S)
            if req.importance_boost:
                boost *= 1 + req.importance_boost * c.importance
            c.explain.boost = boost
            c.score *= boost
        kept = sorted(kept, key=lambda c: c.score, reverse=True)
    kept = kept[: req.limit]
    rows = lexical.fetch_hits(conn, [(c.id, c.score) for c in kept])
    by_id = {h.memory.id: h for h in rows}
    return [
        Hit(
            memory=by_id[c.id].memory,
            score=round(c.score, 6),
            explain=_rounded(c.explain) if req.explain else None,
        )
        for c in kept
        if c.id in by_id
    ]
