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
   happens; a day of slack before covers time zones). See store/dates.py.
3. Neighbours: a memory gets part of the score of the memories stored next to
   it (same workspace, adjacent in insertion order, observed within an hour):
   in a conversation the turn that answers is often not the one that shares
   the query's words, but the reply to it or the question before it.

The tokenizer (porter over unicode61, set in the schema) is kept: on the same
data it beat plain unicode61 and trigram.

Speed at scale (lexical_candidates). SQLite's bm25() scores every memory
that has any query word, and counts each word's memories on every query by
reading its whole doclist: one common word makes a search over a million
memories take a few hundred milliseconds. So the query's words are split by
their document counts (fts5vocab, cached when large). The rarest, up to
RARE_POSTINGS (memory, word) pairs, are ranked by SQLite; the common rest
only re-rank them: first an estimate from which candidates have them
(with_coverage), then the exact full BM25 of the best RESCORE, computed in
Python from their text (BM25, store/bm25.py). A query of common words only looks among
recent memories (recent_matches). On a store of a few thousand memories
every query is within the budget and this is SQLite's own exact ranking
(LoCoMo runs are byte-identical); on 100k and 1M synthetic memories
(tests/bench/bench_search.py) a search costs a few milliseconds instead of
tens to hundreds, and finds the memory a query was made from about as
often as exact BM25 does.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence

import apsw
from reverie.rpc.protocol import Hit
from reverie.store.bm25 import BM25, MIN_IDF, Term, idf

# Names that moved to bm25.py and dates.py stay importable from here: tests, benchmarks
# and hybrid.py (index_totals) use them through this module.
from reverie.store.bm25 import BM25_B as BM25_B
from reverie.store.bm25 import BM25_K1 as BM25_K1
from reverie.store.bm25 import TOKENIZER as TOKENIZER
from reverie.store.bm25 import TOKENIZER_ARGS as TOKENIZER_ARGS
from reverie.store.bm25 import index_totals as index_totals
from reverie.store.bm25 import reader as _reader
from reverie.store.dates import DATE_BOOST as DATE_BOOST
from reverie.store.dates import DATE_SLACK_AFTER as DATE_SLACK_AFTER
from reverie.store.dates import DATE_SLACK_BEFORE as DATE_SLACK_BEFORE
from reverie.store.dates import boost_period, named_period
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
NEIGHBOUR_WEIGHT = 0.5  # share of a hit's score given to its neighbour at distance 1
NEIGHBOUR_WINDOW = 2  # memories on each side; the share falls as 1/distance
# Only the strongest hits spread score. LoCoMo dev, default hybrid, R@10 /
# R@50 / paper R@5: 50 sources 72.2 / 85.8 / 64.6; 30: 72.5 / 85.7 / 65.1;
# 20: 72.5 / 85.3 / 64.9. 30 keeps the quality for 40% less neighbour SQL.
NEIGHBOUR_SOURCES = 30
NEIGHBOUR_GAP_S = 3600.0  # neighbours observed further apart are unrelated
NEIGHBOUR_SCAN = 64  # ids looked at on each side for a neighbour in the same workspace
# Cost bounds (see lexical_candidates); within them results are exact BM25. Chosen on
# 100k and 1M synthetic memories for CPU per search and for how often the memory a
# query was made from is found (tests/bench/bench_search.py; the README has the figures).
RARE_POSTINGS = 1000  # (memory, term) pairs SQLite may rank for one query
RESCORE = 50  # best candidates whose full score is computed from their text
COVERAGE_TERMS = 3  # common words whose presence re-orders the candidates
COMMON_RANK = 200  # newest matches scored for a query of common words only
AND_POSTINGS = 8000  # memories having its rarest word such a query looks at, newest first
COVERAGE_SCAN = 500  # newest memories having the rarest word and another one, per word
FILTER_LOOKUPS = 3200  # ranked memories checked against the filters at most


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


# -- term statistics ----------------------------------------------------------------------

# What each query word costs to match and weighs, which decides how the query is run.
DF_CACHE_MIN = 2000  # document counts at least this large are cached ...
DF_CACHE_TTL_S = 300.0  # ... this long: they are costly to count and change slowly
DF_CACHE_MAX = 50_000
PHRASE_COUNT_MAX = 50_000  # postings walked at most to count a phrase's memories

# (database file, term) -> (memories containing the term, monotonic expiry time).
# Shared by every connection to the file: a common term is counted once per TTL.
_df_cache: dict[tuple[str, str], tuple[int, float]] = {}


def document_frequencies(conn: apsw.Connection, tokens: Iterable[str]) -> dict[str, int]:
    """Memories containing each index token (0 if none), from fts5vocab or the cache.

    fts5vocab counts a token's memories by reading its doclist: microseconds
    for a rare token, milliseconds for one in a large share of a big store,
    hence the cache for those.
    """
    now = time.monotonic()
    out: dict[str, int] = {}
    missing: list[str] = []
    for token in dict.fromkeys(tokens):
        count = _cached((conn.filename, token), now)
        if count is None:
            missing.append(token)
        else:
            out[token] = count
    if missing:
        _reader(conn)
        found = dict(
            conn.execute(
                "SELECT term, doc FROM temp.reverie_fts_terms "
                "WHERE term IN (SELECT value FROM json_each(?))",
                (json.dumps(missing),),
            )
        )
        for token in missing:
            out[token] = count = int(found.get(token, 0))
            if count >= DF_CACHE_MIN:
                _cache((conn.filename, token), count, now)
    return out


def _cached(key: tuple[str, str], now: float) -> int | None:
    hit = _df_cache.get(key) if key[0] else None
    return hit[0] if hit is not None and hit[1] > now else None


def _cache(key: tuple[str, str], count: int, now: float) -> None:
    if key[0]:
        if len(_df_cache) > DF_CACHE_MAX:
            _df_cache.clear()
        _df_cache[key] = (count, now + DF_CACHE_TTL_S)


def phrase_frequency(conn: apsw.Connection, term: Term) -> int:
    """Memories containing the phrase: counted (and cached if that was costly) when
    its walk is at most PHRASE_COUNT_MAX postings, else the rarest token's count."""
    if term.cost > PHRASE_COUNT_MAX:
        return term.cost
    now = time.monotonic()
    key = (conn.filename, " ".join(term.tokens) + " \0phrase")
    count = _cached(key, now)
    if count is None:
        count = int(
            conn.execute(
                "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?", (term.phrase,)
            ).get
        )
        if term.cost >= DF_CACHE_MIN:
            _cache(key, count, now)
    return count


def term_stats(conn: apsw.Connection, words: list[str]) -> list[Term]:
    """The query words with their tokens, document counts and costs, in query order."""
    reader = _reader(conn)
    tokens = {w: tuple(reader.tokens(w, apsw.FTS5_TOKENIZE_QUERY)) for w in words}
    df = document_frequencies(conn, (t for ts in tokens.values() for t in ts))
    terms = []
    for w in words:
        cost = min((df[t] for t in tokens[w]), default=0)
        term = Term(w, tokens[w], cost, cost)
        if len(term.tokens) > 1 and cost:
            term = Term(w, tokens[w], phrase_frequency(conn, term), cost)
        terms.append(term)
    return terms


def split_terms(terms: list[Term], budget: int) -> tuple[list[Term], list[Term]]:
    """(rare, common): the cheapest terms whose costs add up to at most `budget`, and the
    rest, each by increasing cost."""
    ordered = sorted(terms, key=lambda t: t.cost)
    rare: list[Term] = []
    for term in ordered:
        if term.cost > budget:
            break
        rare.append(term)
        budget -= term.cost
    return rare, ordered[len(rare) :]


# -- BM25
# -- candidates -----------------------------------------------------------------------------


def _or(terms: list[Term]) -> str:
    return " OR ".join(t.phrase for t in terms)


def bm25_ranking(conn: apsw.Connection, match: str, *, limit: int) -> list[tuple[int, float]]:
    """The best `limit` matches by SQLite's bm25(), best first, as (id, score > 0)."""
    return [
        (rowid, -rank)  # bm25() is negative, better is lower
        for rowid, rank in conn.execute(
            "SELECT rowid, bm25(memories_fts) AS rank FROM memories_fts "
            "WHERE memories_fts MATCH ? ORDER BY rank LIMIT ?",
            (match, limit),
        )
    ]


def with_coverage(
    conn: apsw.Connection, ranked: list[tuple[int, float]], rare: list[Term], common: list[Term]
) -> list[tuple[int, float]]:
    """The rare terms' ranking re-scored with an estimate of the full score, best first.

    BM25 is a sum over the query's terms: a memory's full score is its
    score on the rare terms plus its score on the common ones. The
    estimate adds the IDF of each of the COVERAGE_TERMS rarest common terms
    to the memories that have it, so that a memory with a rare word and
    many of the query's common ones moves up as it would in the full
    ranking. Matching `(rare) AND "common"` only walks the rare terms'
    doclists, seeking into the long one. Terms in half the store or more
    are left out: their IDF is nil.
    """
    rows, _ = index_totals(conn)
    useful = [t for t in common if idf(t.df, rows) > MIN_IDF][:COVERAGE_TERMS]
    if not ranked or not useful:
        return ranked
    estimate = dict(ranked)
    for term in useful:
        weight = idf(term.df, rows)
        for (rowid,) in conn.execute(
            "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?",
            (f"({_or(rare)}) AND {term.phrase}",),
        ):
            if rowid in estimate:  # (a stale cached count may have cut the ranking short)
                estimate[rowid] += weight
    return sorted(estimate.items(), key=lambda kv: -kv[1])


def recent_matches(conn: apsw.Connection, common: list[Term]) -> list[tuple[int, float]]:
    """For a query of common words only: candidates among recent memories having its
    rarest word, (id, estimate), best first.

    Ranking every memory that has one of several very common words would
    visit a large share of the store. Instead, only the newest memories are
    looked at (as many as hold about AND_POSTINGS of the rarest word), and
    among them those with the rarest word: first the ones that also have
    the most of the other words (`rarest AND other` walks the rarest word's
    doclist and seeks into the other's; its newest COVERAGE_SCAN matches),
    each weighted by its IDF, then the newest. Without a rare word to single
    memories out, recent ones are the better guess.
    """
    rows, _ = index_totals(conn)
    newest = int(conn.execute("SELECT coalesce(max(id), 0) FROM memories").get)
    lowest = newest - AND_POSTINGS * max(rows, 1) // max(common[0].cost, 1)
    first = common[0]
    # Words in half the store or more weigh nothing; words of the same tokens
    # ("test", "tests") are one.
    others = {t.tokens: t for t in common[1:] if idf(t.df, rows) > MIN_IDF}
    others.pop(first.tokens, None)
    estimate: dict[int, float] = {}
    for term in list(others.values())[:COVERAGE_TERMS]:
        weight = idf(term.df, rows)
        for (rowid,) in conn.execute(
            "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? AND rowid > ? "
            "ORDER BY rowid DESC LIMIT ?",
            (f"{first.phrase} AND {term.phrase}", lowest, COVERAGE_SCAN),
        ):
            estimate[rowid] = estimate.get(rowid, 0.0) + weight
    best = sorted(estimate.items(), key=lambda kv: (-kv[1], -kv[0]))[:COMMON_RANK]
    if len(best) < COMMON_RANK:
        for (rowid,) in conn.execute(
            "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? AND rowid > ? "
            "ORDER BY rowid DESC LIMIT ?",
            (first.phrase, lowest, COMMON_RANK),
        ):
            if rowid not in estimate and len(best) < COMMON_RANK:
                best.append((rowid, 0.0))
    return best


# -- filters and the final ranking ------------------------------------------------------------


# A condition on `memories m` and its arguments.
Filters = tuple[str, Sequence[object]]


def _filters(workspace: str | None) -> Filters:
    where = "m.state = 'active' AND m.tier != 'archived'"
    if workspace is None:
        return where, []
    # `+`: never drive these queries by the workspace index (see _where in hybrid.py).
    return where + " AND +m.workspace = ?", [workspace]


Rescore = Callable[[int, str, str], float]


def filter_ranked(
    conn: apsw.Connection,
    ranked: Iterable[tuple[int, float]],
    *,
    workspace: str | None,
    limit: int,
    rescore: Rescore | None = None,
    rescore_count: int = 0,
    filters: Filters | None = None,
) -> dict[int, tuple[float, float]]:
    """The best `limit` of `ranked` (id, score; best first) that pass the search filters,
    as id -> (score, observed_at).

    Looking a memory up costs more than ranking it, so the ranking is read
    in chunks that double in size until enough pass: a search over every
    workspace, where nearly all pass, looks up little more than `limit`;
    one in a workspace holding a small share of the memories reads further
    down. At most FILTER_LOOKUPS memories are looked up.

    With `rescore`, the first `rescore_count` that pass get the score
    rescore(id, content, tags) instead (from the text fetched by the same
    lookup), and the result is re-sorted. `filters` replaces the default
    ones (active, not archived, in `workspace` if given).
    """
    where, args = filters or _filters(workspace)
    columns = "m.id, m.observed_at" + (", m.content, m.tags" if rescore else "")
    found: dict[int, tuple[float, float]] = {}
    rest = iter(ranked)
    size = limit + 16 if workspace is None and filters is None else 2 * limit
    looked = 0
    while len(found) < limit and looked < FILTER_LOOKUPS:
        chunk = dict(itertools.islice(rest, min(size, FILTER_LOOKUPS - looked)))
        if not chunk:
            break
        rows = conn.execute(
            f"SELECT {columns} FROM memories m "
            f"WHERE m.id IN (SELECT value FROM json_each(?)) AND {where}",
            (json.dumps(list(chunk)), *args),
        )
        passed = {row[0]: row for row in rows}
        for mid, score in chunk.items():
            if mid in passed and len(found) < limit:
                row = passed[mid]
                if rescore is not None and len(found) < rescore_count:
                    score = rescore(mid, row[2], row[3])
                found[mid] = (score, row[1])
        looked, size = looked + len(chunk), 2 * size
    if rescore is None:
        return found
    return dict(sorted(found.items(), key=lambda kv: -kv[1][0]))


def bm25_scores(
    conn: apsw.Connection, match: str, *, workspace: str | None, limit: int
) -> dict[int, tuple[float, float]]:
    """Exact BM25 for an FTS5 expression: the best `limit` matches that pass the
    filters, memory id -> (score, higher is better; observed_at).

    As slow as the expression's doclists are long: searches go through
    lexical_candidates, which bounds that. The best 2 * limit matches are
    ranked on the full-text index alone and filtered afterwards; only if the
    filter leaves too few does the exact, slower join run.
    """
    ranked = bm25_ranking(conn, match, limit=2 * limit)
    found = filter_ranked(conn, ranked, workspace=workspace, limit=limit)
    if len(found) >= limit or len(ranked) < 2 * limit:
        return found
    where, args = _filters(workspace)
    rows = conn.execute(
        f"SELECT m.id, m.observed_at, bm25(memories_fts) AS rank FROM memories_fts "
        f"JOIN memories m ON m.id = memories_fts.rowid "
        f"WHERE memories_fts MATCH ? AND {where} ORDER BY rank LIMIT ?",
        (match, *args, limit),
    )
    return {mid: (-rank, at) for mid, at, rank in rows}


def lexical_candidates(
    conn: apsw.Connection,
    query: str,
    *,
    workspace: str | None,
    limit: int,
    filters: Filters | None = None,
) -> dict[int, tuple[float, float]]:
    """The best `limit` memories by BM25 over the query's content words that pass the
    filters (`filters`, else the default ones for `workspace`): id -> (score,
    observed_at).

    SQLite's bm25() scores every memory matching any query word, and counts
    each word's memories on every query: a word in a large share of the
    store makes a search slow however selective the others are. So the
    words are split by their (cached) document counts. The rarest, whose
    counts add up to at most RARE_POSTINGS, are ranked by SQLite; the
    common rest re-order that ranking (with_coverage), and the best
    candidates get their exact full score from their text (BM25). A query
    of common words only looks at recent matches (recent_matches). Up to
    the budget, which covers every query on a store of a few thousand
    memories, this is plain BM25 over all the words, as SQLite ranks it.
    """
    words = query_terms(query)
    # Words no memory has match nothing, and must not pass for the rare ones.
    terms = [t for t in term_stats(conn, words) if t.df > 0] if words else []
    if not terms:
        return {}
    rare, common = split_terms(terms, RARE_POSTINGS)
    if not common:
        ranked = bm25_ranking(conn, _or(rare), limit=FILTER_LOOKUPS)
        return filter_ranked(conn, ranked, workspace=workspace, limit=limit, filters=filters)
    if rare:
        ranked = bm25_ranking(conn, _or(rare), limit=RARE_POSTINGS)
        rare_score = dict(ranked)
        common_score = BM25(conn, common)
        ranked = with_coverage(conn, ranked, rare, common)
        count = RESCORE
    else:
        rare_score = {}
        common_score = BM25(conn, terms)
        ranked = recent_matches(conn, common)
        count = len(ranked)

    def rescore(mid: int, content: str, tags: str) -> float:
        return rare_score.get(mid, 0.0) + common_score.score(content, tags)

    return filter_ranked(
        conn,
        ranked,
        workspace=workspace,
        limit=limit,
        rescore=rescore,
        rescore_count=count,
        filters=filters,
    )


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
    conn: apsw.Connection,
    query: str,
    *,
    workspace: str | None,
    limit: int,
    filters: Filters | None = None,
) -> dict[int, float]:
    """BM25 over the query's content words, with the date boost: memory id -> score.

    This is the lexical component before neighbour context, for callers that
    fuse it with other rankings and spread the fused scores themselves.
    `filters` (SQL on `memories m`, with its arguments) replaces the default
    filters, e.g. to add kinds, tags or a time range: the search stays as
    bounded as without them.
    """
    found = lexical_candidates(conn, query, workspace=workspace, limit=limit, filters=filters)
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
