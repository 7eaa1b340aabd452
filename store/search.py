"""Full-text search over active memories (FTS5, BM25), with query-time context.

A user's query is free text, not FTS5 syntax: it is cut into words, each word
is quoted (so `AND`, `NEAR`, `*` or a stray quote mean nothing special), and
the words are OR-ed so that BM25 ranks memories by how many rare words they
share with the query. On top of that, three query-time steps, each of which
measurably raised recall on the LoCoMo development half (tests/bench/locomo.py;
the figures are in the README's performance section):

1. Stopwords: English function words and question words are dropped from the
   query (unless nothing else is left). With OR semantics every query word
   adds to a memory's score, and words such as "what", "did" or "the" are
   frequent enough in chat text to lift memories that share nothing else.
2. Dates: a query naming a day ("on 3 June, 2023", "May 23, 2023"), a month
   of a year ("in July 2023") or a year boosts memories observed in that
   period or within a week after it (people tell of an event after it
   happens; a day of slack before covers time zones).
3. Neighbours: a memory gets part of the score of the memories stored next to
   it (same workspace, adjacent in insertion order, observed within an hour):
   in a conversation the turn that answers is often not the one that shares
   the query's words, but the reply to it or the question before it.

The tokenizer (porter over unicode61, set in the schema) is kept: on the same
data it beat plain unicode61 and trigram.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import apsw
from reverie.rpc.protocol import Hit
from reverie.store.memories import COLUMNS, row_to_memory

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 64

# NLTK's English stopword list without "won" (a verb in "what did she
# win"/"has he won"), plus the question words it lacks.
STOPWORDS = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
    she her hers herself it its itself they them their theirs themselves what which who whom
    whose this that these those am is are was were be been being have has had having do does
    did doing a an the and but if or because as until while of at by for with about against
    between into through during before after above below to from up down in out on off over
    under again further then once here there when where why how all any both each few more
    most other some such no nor not only own same so than too very s t can will just don
    should now d ll m o re ve y ain aren couldn didn doesn hadn hasn haven isn ma mightn
    mustn needn shan shouldn wasn weren wouldn
    """.split()
)

# Ranking knobs (see the module docstring for what each step is for).
CANDIDATES = 200  # BM25 hits considered before re-ranking
DATE_BOOST = 1.0  # a memory in the period the query names scores (1 + DATE_BOOST) times more
DATE_SLACK_BEFORE = dt.timedelta(days=1)
DATE_SLACK_AFTER = dt.timedelta(days=7)
NEIGHBOUR_WEIGHT = 0.5  # share of a hit's score given to its neighbour at distance 1
NEIGHBOUR_WINDOW = 2  # memories on each side; the share falls as 1/distance
NEIGHBOUR_SOURCES = 50  # only the strongest hits spread score
NEIGHBOUR_GAP_S = 3600.0  # neighbours observed further apart are unrelated
NEIGHBOUR_SCAN = 64  # ids looked at on each side for a neighbour in the same workspace


# -- the query ------------------------------------------------------------------------


def query_terms(text: str) -> list[str]:
    """The query's distinct words, lowercased, stopwords dropped unless all are."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    content = [w for w in words if w not in STOPWORDS]
    return (content or words)[:MAX_QUERY_TERMS]


def fts_query(text: str) -> str | None:
    """The FTS5 MATCH expression for free text, or None if it has no words."""
    terms = query_terms(text)
    if not terms:
        return None
    return " OR ".join(f'"{w}"' for w in terms)


# -- dates named in the query ---------------------------------------------------------------

_MONTHS = {
    name: i
    for i, name in enumerate(
        (
            "january february march april may june july august september october november december"
        ).split(),
        1,
    )
}
_MONTH = "(" + "|".join(_MONTHS) + ")"
_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?(?: of)? {_MONTH},? (\d{{4}})\b", re.I)
_MONTH_DAY_YEAR = re.compile(rf"\b{_MONTH} (\d{{1,2}})(?:st|nd|rd|th)?,? (\d{{4}})\b", re.I)
_MONTH_YEAR = re.compile(rf"\b{_MONTH},? (\d{{4}})\b", re.I)
_YEAR = re.compile(r"\b(19\d\d|20\d\d)\b")


def _day(year: int, month: int, day: int) -> tuple[dt.datetime, dt.datetime] | None:
    try:
        start = dt.datetime(year, month, day, tzinfo=dt.UTC)
    except ValueError:
        return None  # "31 February": not a date, so no time filter
    return start, start + dt.timedelta(days=1)


def named_period(text: str) -> tuple[dt.datetime, dt.datetime] | None:
    """The period [start, end) of the first absolute date the text names, if any.

    Days, months of a year and years are understood; relative phrases ("last
    week") are not, since a search has no reference time to resolve them.
    """
    if m := _DAY_MONTH_YEAR.search(text):
        return _day(int(m[3]), _MONTHS[m[2].lower()], int(m[1]))
    if m := _MONTH_DAY_YEAR.search(text):
        return _day(int(m[3]), _MONTHS[m[1].lower()], int(m[2]))
    if m := _MONTH_YEAR.search(text):
        year, month = int(m[2]), _MONTHS[m[1].lower()]
        start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
        return start, dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
    if m := _YEAR.search(text):
        year = int(m[1])
        return dt.datetime(year, 1, 1, tzinfo=dt.UTC), dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
    return None


# -- ranking --------------------------------------------------------------------------------


def _filters(workspace: str | None) -> tuple[str, list[object]]:
    where = "m.state = 'active' AND m.tier != 'archived'"
    if workspace is None:
        return where, []
    return where + " AND m.workspace = ?", [workspace]


def bm25_scores(
    conn: apsw.Connection, match: str, *, workspace: str | None, limit: int
) -> dict[int, tuple[float, float]]:
    """The best `limit` matches: memory id -> (BM25 score, higher is better; observed_at).

    Joining every match to `memories` to filter it costs more than ranking
    it, so the best 2 * limit matches are ranked on the full-text index
    alone and filtered afterwards. Only if the filter (a selective
    workspace, archived memories) leaves too few does the exact, slower
    join run.
    """
    where, args = _filters(workspace)
    # bm25() is negative, better is lower; scores here are positive, higher is better.
    ranked = [
        (rowid, -rank)
        for rowid, rank in conn.execute(
            "SELECT rowid, bm25(memories_fts) AS rank FROM memories_fts "
            "WHERE memories_fts MATCH ? ORDER BY rank LIMIT ?",
            (match, 2 * limit),
        )
    ]
    observed = dict(
        conn.execute(
            f"SELECT m.id, m.observed_at FROM memories m "
            f"WHERE m.id IN (SELECT value FROM json_each(?)) AND {where}",
            (json.dumps([rowid for rowid, _ in ranked]), *args),
        )
    )
    found = {rowid: (score, observed[rowid]) for rowid, score in ranked if rowid in observed}
    if len(found) >= limit or len(ranked) < 2 * limit:
        return dict(list(found.items())[:limit])
    rows = conn.execute(
        f"SELECT m.id, m.observed_at, bm25(memories_fts) AS rank FROM memories_fts "
        f"JOIN memories m ON m.id = memories_fts.rowid "
        f"WHERE memories_fts MATCH ? AND {where} ORDER BY rank LIMIT ?",
        (match, *args, limit),
    )
    return {mid: (-rank, at) for mid, at, rank in rows}


def boost_period(
    scores: dict[int, tuple[float, float]], period: tuple[dt.datetime, dt.datetime]
) -> dict[int, float]:
    """Scores with memories observed in (or shortly after) the period multiplied up."""
    lo = (period[0] - DATE_SLACK_BEFORE).timestamp()
    hi = (period[1] + DATE_SLACK_AFTER).timestamp()
    return {
        mid: score * (1 + DATE_BOOST) if lo <= observed < hi else score
        for mid, (score, observed) in scores.items()
    }


# The unary `+` keeps SQLite off the (state, tier, workspace) index: walking
# the rowid range next to each hit reads at most SCAN rows, the index would
# read every active memory of the workspace.
_NEIGHBOURS = """
WITH hit(id, ws, at) AS (
    SELECT id, workspace, observed_at FROM memories WHERE id IN (SELECT value FROM json_each(?1))
)
SELECT hit.id, n.id FROM hit, memories n WHERE n.id IN (
    SELECT p.id FROM memories p
    WHERE p.id < hit.id AND p.id >= hit.id - ?2 AND +p.workspace = hit.ws
      AND +p.state = 'active' AND +p.tier != 'archived'
    ORDER BY p.id DESC LIMIT ?3
) AND abs(n.observed_at - hit.at) <= ?4
UNION ALL
SELECT hit.id, n.id FROM hit, memories n WHERE n.id IN (
    SELECT p.id FROM memories p
    WHERE p.id > hit.id AND p.id <= hit.id + ?2 AND +p.workspace = hit.ws
      AND +p.state = 'active' AND +p.tier != 'archived'
    ORDER BY p.id LIMIT ?3
) AND abs(n.observed_at - hit.at) <= ?4
"""


def neighbours(conn: apsw.Connection, ids: list[int]) -> dict[int, list[tuple[int, int]]]:
    """For each memory, its searchable neighbours as (neighbour id, distance 1..WINDOW)."""
    found: dict[int, list[int]] = {}
    args = (json.dumps(ids), NEIGHBOUR_SCAN, NEIGHBOUR_WINDOW, NEIGHBOUR_GAP_S)
    for hit, other in conn.execute(_NEIGHBOURS, args):
        found.setdefault(hit, []).append(other)
    out: dict[int, list[tuple[int, int]]] = {}
    for hit, others in found.items():
        before = sorted((o for o in others if o < hit), reverse=True)
        after = sorted(o for o in others if o > hit)
        out[hit] = [(o, d) for side in (before, after) for d, o in enumerate(side, 1)]
    return out


def spread_to_neighbours(conn: apsw.Connection, scores: dict[int, float]) -> dict[int, float]:
    """Each memory's score plus the best share it gets from a strong neighbouring hit.

    new(j) = s(j) + max over hits i next to j of WEIGHT * s(i) / distance(i, j),
    where s is 0 for memories that did not match; so a memory can enter the
    results through its neighbour alone.
    """
    sources = sorted(scores, key=scores.__getitem__, reverse=True)[:NEIGHBOUR_SOURCES]
    bonus: dict[int, float] = {}
    for hit, near in neighbours(conn, sources).items():
        for other, distance in near:
            share = NEIGHBOUR_WEIGHT * scores[hit] / distance
            if share > bonus.get(other, 0.0):
                bonus[other] = share
    out = dict(scores)
    for mid, extra in bonus.items():
        out[mid] = out.get(mid, 0.0) + extra
    return out


def lexical_scores(
    conn: apsw.Connection, query: str, *, workspace: str | None, limit: int
) -> dict[int, float]:
    """BM25 over the query's content words, with the date boost: memory id -> score.

    This is the lexical component before neighbour context, for callers that
    fuse it with other rankings and spread the fused scores themselves.
    """
    match = fts_query(query)
    if match is None:
        return {}
    found = bm25_scores(conn, match, workspace=workspace, limit=limit)
    period = named_period(query)
    if period is not None:
        return boost_period(found, period)
    return {mid: score for mid, (score, _) in found.items()}


def best(scores: dict[int, float], limit: int) -> list[tuple[int, float]]:
    """The `limit` best (id, score), best first; ties go to the older memory (stable)."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def rank(
    conn: apsw.Connection, query: str, *, workspace: str | None, limit: int
) -> list[tuple[int, float]]:
    """The best `limit` memory ids for a free-text query, with their scores, best first."""
    scores = lexical_scores(conn, query, workspace=workspace, limit=max(CANDIDATES, limit))
    return best(spread_to_neighbours(conn, scores), limit)


def fetch_hits(conn: apsw.Connection, ranked: list[tuple[int, float]]) -> list[Hit]:
    """The memories of a ranking, in its order."""
    if not ranked:
        return []
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM memories WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps([mid for mid, _ in ranked]),),
    )
    by_id = {row[0]: row_to_memory(row) for row in rows}
    return [Hit(memory=by_id[mid], score=score) for mid, score in ranked if mid in by_id]


def search(conn: apsw.Connection, query: str, *, workspace: str | None, limit: int) -> list[Hit]:
    return fetch_hits(conn, rank(conn, query, workspace=workspace, limit=limit))
