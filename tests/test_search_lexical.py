"""Lexical search: query words, morphology, dates named in the query, neighbour context.

Most tests run store/search.py on a real SQLite database built with the real
schema and store functions; the last one goes through a real daemon. The
bounded plan for big stores (rare words ranked by SQLite, common ones only
re-ranking) is tested on small stores with its budgets shrunk to match.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from harness import Daemon
from reverie.rpc.protocol import Remember
from reverie.store import memories, schema, search
from reverie.store.connection import open_connection

DAY = dt.datetime(2023, 5, 8, 13, 56, tzinfo=dt.UTC)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[apsw.Connection]:
    c = open_connection(tmp_path / "reverie.db")
    schema.migrate(c)
    try:
        yield c
    finally:
        c.close()


def add(conn: apsw.Connection, content: str, **fields: Any) -> int:
    """Remember one memory. Unless told otherwise, each is observed on a day of
    its own, so that neighbour context (same hour) does not join them."""
    fields.setdefault("workspace", "w")
    count = int(conn.execute("SELECT count(*) FROM memories").get or 0)
    fields.setdefault("observed_at", DAY - dt.timedelta(days=30 * (count + 1)))
    with conn:
        mid, created = memories.remember(conn, Remember(content=content, **fields))
    assert created
    return mid


def ids(
    conn: apsw.Connection, query: str, *, workspace: str | None = "w", limit: int = 10
) -> list[int]:
    return [h.memory.id for h in search.search(conn, query, workspace=workspace, limit=limit)]


# -- the query --------------------------------------------------------------------------


def test_query_terms_drop_stopwords_and_question_words() -> None:
    assert search.query_terms("What did Caroline's sister research?") == [
        "caroline",
        "sister",
        "research",
    ]
    assert search.query_terms("How many tournaments has Nate won?") == [
        "many",
        "tournaments",
        "nate",
        "won",
    ]


def test_a_query_of_stopwords_only_keeps_its_words(conn: apsw.Connection) -> None:
    assert search.query_terms("Who are you?") == ["who", "are", "you"]
    mid = add(conn, "who are you, stranger")
    add(conn, "the kettle is broken")
    assert ids(conn, "Who are you?") == [mid]
    assert search.fts_query("?!  ") is None and ids(conn, "?!") == []


def test_stopwords_do_not_outrank_content_words(conn: apsw.Connection) -> None:
    noise = add(conn, "what did you do and what did they do when it was there")
    answer = add(conn, "Caroline has been researching adoption agencies")
    assert ids(conn, "What did Caroline research?") == [answer]
    assert noise not in ids(conn, "What did Caroline research?")


def test_query_syntax_is_quoted(conn: apsw.Connection) -> None:
    mid = add(conn, 'a "quoted" NEAR thing')
    for q in ['"', "AND", "NEAR(", "*", "col:val", "quoted OR", ")("]:
        search.search(conn, q, workspace="w", limit=5)  # never an FTS5 syntax error
    assert ids(conn, 'NEAR("quoted"') == [mid]


def test_morphology_matches_through_the_stemmer(conn: apsw.Connection) -> None:
    painted = add(conn, "Melanie painted a sunrise over the lake")
    add(conn, "Melanie went camping with the kids")
    assert ids(conn, "paintings")[:1] == [painted]
    assert ids(conn, "Who paints?") == [painted]


def test_diacritics_are_folded(conn: apsw.Connection) -> None:
    mid = add(conn, "We met at the café near the école")
    assert ids(conn, "cafe ecole") == [mid]


# -- dates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("What did Gina find on 1 February, 2023?", "2023-02-01", "2023-02-02"),
        ("What did she do on the 3rd of June 2023", "2023-06-03", "2023-06-04"),
        ("Who did Maria dine with on May 3, 2023?", "2023-05-03", "2023-05-04"),
        ("What happened in December 2023?", "2023-12-01", "2024-01-01"),
        ("What happened in July, 2022?", "2022-07-01", "2022-08-01"),
        ("How many times to the beach in 2023?", "2023-01-01", "2024-01-01"),
    ],
)
def test_named_period(text: str, start: str, end: str) -> None:
    period = search.named_period(text)
    assert period is not None
    assert (period[0].date().isoformat(), period[1].date().isoformat()) == (start, end)


@pytest.mark.parametrize(
    "text", ["When did she go camping last week?", "on 31 February, 2023", "room 101", "in May"]
)
def test_no_named_period(text: str) -> None:
    assert search.named_period(text) is None


def test_a_named_date_lifts_memories_observed_then(conn: apsw.Connection) -> None:
    early = add(conn, "John visited the museum", observed_at=DAY)  # 8 May 2023
    late = add(conn, "John visited the museum again", observed_at=DAY + dt.timedelta(days=60))
    # Without a date, BM25 prefers the shorter memory.
    assert ids(conn, "museum John visited") == [early, late]
    assert ids(conn, "What did John visit on 7 July, 2023?") == [late, early]
    assert ids(conn, "Which museum did John visit in July 2023?") == [late, early]
    # An event is often told up to a week after it happened (late is 7 July)...
    assert ids(conn, "What did John visit on 30 June, 2023?") == [late, early]
    assert ids(conn, "What did John visit on 28 June, 2023?") == [early, late]
    # ... and a day of slack before covers time zones.
    assert ids(conn, "What did John visit on 8 July, 2023?") == [late, early]
    assert ids(conn, "What did John visit on 9 July, 2023?") == [early, late]


# -- neighbours -------------------------------------------------------------------------


def conversation(
    conn: apsw.Connection, lines: list[str], at: dt.datetime, ws: str = "w"
) -> list[int]:
    return [add(conn, line, observed_at=at, workspace=ws) for line in lines]


def test_the_reply_to_a_matching_turn_is_found(conn: apsw.Connection) -> None:
    elsewhere = add(conn, 'Caroline said, "I love the beach in summer."')
    turns = conversation(
        conn,
        [
            'Melanie said, "Did you ever look into adoption agencies?"',
            'Caroline said, "Yes, I found two I really like and applied last week!"',
            'Melanie said, "The weather is lovely today."',
        ],
        DAY,
    )
    query = "What did Caroline find out about adoption agencies?"
    # Plain BM25 ranks the reply like any other turn of Caroline's: it shares only her name.
    plain = search.bm25_scores(conn, search.fts_query(query) or "", workspace="w", limit=10)
    assert plain[turns[1]][0] == pytest.approx(plain[elsewhere][0], rel=0.2)
    # Context lifts it right after the question it answers.
    assert ids(conn, query) == [turns[0], turns[1], turns[2], elsewhere]


def test_neighbour_share_falls_with_distance(conn: apsw.Connection) -> None:
    turns = conversation(conn, ["zebra stripes", "one", "two", "three"], DAY)
    scores = dict(search.rank(conn, "zebra", workspace="w", limit=10))
    assert list(scores) == turns[:3] and scores[turns[2]] > 0
    assert scores[turns[1]] == pytest.approx(search.NEIGHBOUR_WEIGHT * scores[turns[0]])
    assert scores[turns[2]] == pytest.approx(search.NEIGHBOUR_WEIGHT * scores[turns[0]] / 2)


def test_neighbours_stay_in_their_session_and_workspace(conn: apsw.Connection) -> None:
    before = add(
        conn, "an unrelated note from the day before", observed_at=DAY - dt.timedelta(days=1)
    )
    other = add(conn, "a note in another workspace", observed_at=DAY, workspace="elsewhere")
    hit = add(conn, "the zebra escaped from the zoo", observed_at=DAY)
    forgotten = add(conn, "a turn that was forgotten", observed_at=DAY)
    after = add(conn, "the keeper caught it", observed_at=DAY)
    with conn:
        memories.forget(conn, forgotten, purge=False, reason="test")
    found = ids(conn, "zebra", workspace="w")
    assert found == [hit, after]
    assert before not in found and other not in found and forgotten not in found
    # Across workspaces, a hit's neighbours are still those of its own workspace.
    assert ids(conn, "zebra", workspace=None) == [hit, after]


def test_archived_memories_are_not_found(conn: apsw.Connection) -> None:
    add(conn, "the archived zebra", tier="archived")
    live = add(conn, "the live zebra", observed_at=DAY - dt.timedelta(days=9))
    assert ids(conn, "zebra") == [live]


def test_a_selective_workspace_still_gets_its_matches(conn: apsw.Connection) -> None:
    # More strong matches elsewhere than the fast path looks at: the exact path must run.
    with conn:
        for i in range(2 * search.CANDIDATES + 20):
            memories.remember(conn, Remember(content=f"alpha alpha {i}", workspace="big"))
    mine = add(conn, "alpha and many other words in a longer memory", workspace="small")
    assert ids(conn, "alpha", workspace="small") == [mine]
    assert len(ids(conn, "alpha", workspace="big", limit=30)) == 30


def test_results_are_ordered_and_limited(conn: apsw.Connection) -> None:
    for i in range(30):
        add(
            conn,
            f"kiwi {'kiwi ' * (i % 3)}fruit number {i}",
            observed_at=DAY + dt.timedelta(days=i),
        )
    hits = search.search(conn, "kiwi fruit", workspace="w", limit=7)
    assert len(hits) == 7
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert ids(conn, "kiwi fruit", limit=7) == [h.memory.id for h in hits]


# -- at scale: term statistics, BM25 in Python, the bounded plan ----------------------------


def fts_count(conn: apsw.Connection, match: str) -> int:
    return int(
        conn.execute("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?", (match,)).get
    )


def test_term_statistics_agree_with_the_index(conn: apsw.Connection) -> None:
    add(conn, "parse the config file", tags=["config"])
    add(conn, "the parser reads config values")
    add(conn, "parse_config failed twice, parse_config again", tags=["bug", "parse"])
    add(conn, "an unrelated memory")
    add(conn, "an archived parse_config", tier="archived")
    forgotten = add(conn, "a forgotten config")
    with conn:
        memories.forget(conn, forgotten, purge=False, reason="test")
    counts = search.document_frequencies(conn, ["pars", "config", "nowhere"])
    assert counts == {
        "pars": fts_count(conn, '"parse"'),  # the index token of "parse"
        "config": fts_count(conn, '"config"'),
        "nowhere": 0,
    }
    assert counts["config"] == 4  # forgotten memories leave the index, archived ones stay
    # The averages record holds what bm25() uses: rows and tokens in the index.
    reader = search._reader(conn)
    indexed = conn.execute("SELECT content, tags FROM memories WHERE state = 'active'").fetchall()
    tokens = sum(len(reader.tokens(c)) + len(reader.tokens(t)) for c, t in indexed)
    assert search.index_totals(conn) == (len(indexed), tokens)
    # A word of several tokens is a phrase: counted exactly, costed by its rarest token.
    (term,) = search.term_stats(conn, ["parse_config"])
    assert term.tokens == ("pars", "config")
    assert (term.df, term.cost) == (fts_count(conn, '"parse_config"'), counts["pars"])
    assert (term.df, term.cost) == (2, 3)


def test_python_bm25_equals_sqlite_bm25(conn: apsw.Connection) -> None:
    texts = [
        "alpha beta",
        "alpha alpha alpha gamma and a much longer tail of words to stretch the length",
        "beta gamma delta_epsilon",
        "delta epsilon delta_epsilon delta epsilon",
        "gamma",
    ]
    for i, text in enumerate(texts * 3):
        add(conn, f"{text} {i}", tags=["alpha"] if i % 4 == 0 else [])
    for query in ["alpha", "alpha gamma", "beta delta_epsilon", "gamma delta epsilon alpha"]:
        terms = search.term_stats(conn, search.query_terms(query))
        scorer = search.BM25(conn, terms)
        rows = conn.execute(
            "SELECT m.content, m.tags, -bm25(memories_fts) FROM memories_fts "
            "JOIN memories m ON m.id = memories_fts.rowid WHERE memories_fts MATCH ?",
            (search.fts_query(query),),
        ).fetchall()
        assert rows
        for content, tags, expected in rows:
            assert scorer.score(content, tags) == pytest.approx(expected, rel=1e-9), content


def test_split_terms_spends_the_budget_on_the_rarest() -> None:
    def t(word: str, cost: int) -> search.Term:
        return search.Term(word, (word,), cost, cost)

    terms = [t("common", 900), t("rare", 5), t("mid", 60), t("other", 40)]
    rare, common = search.split_terms(terms, 100)
    assert [x.word for x in rare] == ["rare", "other"]  # 5 + 40; + 60 would exceed
    assert [x.word for x in common] == ["mid", "common"]
    assert search.split_terms(terms, 10_000) == (sorted(terms, key=lambda x: x.cost), [])
    assert search.split_terms([t("huge", 500)], 100) == ([], [t("huge", 500)])


@pytest.fixture
def big_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budgets as small as a handful of memories: the tests' small stores take the
    paths that a store of a million memories takes."""
    monkeypatch.setattr(search, "RARE_POSTINGS", 6)
    monkeypatch.setattr(search, "AND_POSTINGS", 1000)


def ranked_matches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the expressions SQLite is asked to rank with bm25()."""
    seen: list[str] = []
    real = search.bm25_ranking

    def recording(conn: apsw.Connection, match: str, *, limit: int) -> list[tuple[int, float]]:
        seen.append(match)
        return real(conn, match, limit=limit)

    monkeypatch.setattr(search, "bm25_ranking", recording)
    return seen


def test_common_words_rerank_but_are_not_ranked_by_sqlite(
    conn: apsw.Connection, big_store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(12):
        add(conn, f"kettle note {i}")
    plain = add(conn, "zebra crossing")
    both = add(conn, "zebra kettle")
    seen = ranked_matches(monkeypatch)
    found = ids(conn, "zebra kettle")
    assert seen == ['"zebra"']
    # The memory with both words wins, as in full BM25, with the same scores.
    assert found[:2] == [both, plain]
    exact = search.bm25_scores(conn, search.fts_query("zebra kettle") or "", workspace="w", limit=5)
    assert list(exact)[:2] == [both, plain]
    scores = search.lexical_candidates(conn, "zebra kettle", workspace="w", limit=5)
    assert scores[both][0] == pytest.approx(exact[both][0], rel=1e-9)
    assert scores[plain][0] == pytest.approx(exact[plain][0], rel=1e-9)


def test_common_words_lift_a_rare_match_beyond_the_rescored_head(
    conn: apsw.Connection, big_store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five matches of the rare word; the one that also has the common words is
    # the longest, so the rare word alone ranks it last, out of the two that
    # get their full score from the text. Counting the common words it has
    # (with_coverage) must bring it in; full BM25 ranks it first.
    monkeypatch.setattr(search, "RARE_POSTINGS", 8)
    monkeypatch.setattr(search, "RESCORE", 2)
    for i in range(10):
        add(conn, f"build cache note {i}")
    for i in range(30):  # (so that "build" and "cache" are in less than half the store)
        add(conn, f"unrelated {i}")
    for i in range(4):
        add(conn, f"zebra stripe {i}")
    target = add(conn, "zebra build cache, with a few more words in it")
    rare_only = search.bm25_ranking(conn, '"zebra"', limit=10)
    assert rare_only[-1][0] == target
    assert ids(conn, "zebra build cache")[0] == target
    exact = search.bm25_scores(
        conn, search.fts_query("zebra build cache") or "", workspace="w", limit=3
    )
    assert next(iter(exact)) == target


def test_a_query_of_common_words_looks_at_recent_memories_having_them_all(
    conn: apsw.Connection, big_store: None
) -> None:
    old_both = add(conn, "alpha beta, from long ago")
    for i in range(10):
        add(conn, f"alpha {i}")
        add(conn, f"beta {i}")
    new_both = add(conn, "alpha beta, lately")
    found = ids(conn, "alpha beta")
    assert found[:2] == [new_both, old_both]


def test_a_query_of_common_words_looks_back_only_so_far(
    conn: apsw.Connection, big_store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only memories recent enough to hold about AND_POSTINGS of the rarest word
    # are looked at: here the newest 2 * 20 // 11 = 3 ids (18: alpha, 19: beta, 20).
    monkeypatch.setattr(search, "AND_POSTINGS", 2)
    old_both = add(conn, "alpha beta, from long ago")
    for i in range(9):
        add(conn, f"alpha {i}")
        add(conn, f"beta {i}")
    recent = add(conn, "beta alpha, lately")
    assert recent == 20
    found = search.lexical_candidates(conn, "alpha beta", workspace="w", limit=5)
    assert set(found) == {recent, 18}  # all words first, then the rarest ("alpha") alone
    assert old_both not in found


def test_a_word_no_memory_has_leaves_the_others_to_match(
    conn: apsw.Connection, big_store: None
) -> None:
    kettles = [add(conn, f"kettle {i}") for i in range(8)]
    assert set(ids(conn, "kettle zqxjv", limit=20)) == set(kettles)
    assert ids(conn, "zqxjv") == []


@pytest.mark.parametrize("query", ["zebra", "zebra kettle", "kettle"])
def test_filters_hold_on_every_path(conn: apsw.Connection, big_store: None, query: str) -> None:
    mine = set()
    for i in range(6):
        mine.add(add(conn, f"zebra kettle {i}", observed_at=DAY + dt.timedelta(days=i)))
        add(conn, f"zebra kettle elsewhere {i}", workspace="other")
        add(conn, f"zebra kettle archived {i}", tier="archived")
        add(conn, f"kettle only {i}", workspace="other")
    terms = search.term_stats(conn, search.query_terms(query))
    _, common = search.split_terms(terms, search.RARE_POSTINGS)
    assert common  # every query here takes a bounded path
    found = search.lexical_candidates(conn, query, workspace="w", limit=50)
    assert set(found) == mine


@pytest.mark.parametrize("query", ["zebra", "zebra kettle", "kettle"])
def test_custom_filters_replace_the_default_ones(
    conn: apsw.Connection, big_store: None, query: str
) -> None:
    decisions = set()
    for i in range(6):
        decisions.add(add(conn, f"zebra kettle {i}", kind="decision"))
        add(conn, f"zebra kettle seen {i}")
        add(conn, f"kettle only {i}")
    decisions.add(add(conn, "zebra kettle, an old decision", kind="decision", tier="archived"))
    where = ("m.state = 'active' AND m.kind = ?", ["decision"])  # archived ones too
    found = search.lexical_scores(conn, query, workspace=None, limit=50, filters=where)
    assert set(found) == decisions


def test_cached_counts_expire(conn: apsw.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "DF_CACHE_MIN", 2)
    monkeypatch.setattr(search, "_df_cache", {})
    for i in range(3):
        add(conn, f"kiwi {i}")
    add(conn, "lime")
    assert search.document_frequencies(conn, ["kiwi", "lime"]) == {"kiwi": 3, "lime": 1}
    add(conn, "kiwi again")
    add(conn, "lime again")
    # Large counts come from the cache until it expires; small ones are always fresh.
    assert search.document_frequencies(conn, ["kiwi", "lime"]) == {"kiwi": 3, "lime": 2}
    now = time.monotonic()
    monkeypatch.setattr(search.time, "monotonic", lambda: now + search.DF_CACHE_TTL_S + 1)
    assert search.document_frequencies(conn, ["kiwi"]) == {"kiwi": 4}


def test_tokenizer_matches_the_schema() -> None:
    table = schema.MIGRATIONS[0].split("CREATE VIRTUAL TABLE memories_fts")[1].split(");")[0]
    expected = " ".join((search.TOKENIZER, *search.TOKENIZER_ARGS))
    assert f"tokenize = '{expected}'" in table


def test_quality_at_scale_stays_close_to_exact_bm25(
    conn: apsw.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 20k synthetic memories with budgets scaled down 20 times (as if they were
    400k), the memory a query was made from is found about as often as by exact
    BM25 over every word (177 and 181 times of 200 when this was written)."""
    from bench import corpus

    n = 20_000
    items = list(corpus.generate(n, seed=3))
    with conn:
        for item in items:
            memories.remember(conn, Remember(**item))
    conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')")
    monkeypatch.setattr(search, "RARE_POSTINGS", search.RARE_POSTINGS // 20)
    monkeypatch.setattr(search, "AND_POSTINGS", search.AND_POSTINGS // 20)
    qs = corpus.queries_for([items[i] for i in corpus.query_sources(200, 3, n)], 3)
    bounded = exact = 0
    for q in qs:
        source = q["source"] + 1
        hits = search.search(conn, q["query"], workspace=q["workspace"], limit=10)
        bounded += source in [h.memory.id for h in hits]
        match = search.fts_query(q["query"]) or ""
        top = search.bm25_scores(conn, match, workspace=q["workspace"], limit=10)
        exact += source in top
    assert exact > 100  # the queries are answerable
    assert bounded >= exact - 10, (bounded, exact)


# -- through the daemon -------------------------------------------------------------------


def test_daemon_search_uses_neighbour_context(daemon: Daemon) -> None:
    with daemon.client() as c:
        q = c.remember(
            'Jon said, "Have you found a spot for the dance studio yet?"', observed_at=DAY
        )
        a = c.remember('Gina said, "Yes! A lovely place downtown, signed today."', observed_at=DAY)
        c.remember(
            "Unrelated: the build takes four minutes", observed_at=DAY + dt.timedelta(days=3)
        )
        found = c.search("Where is the dance studio Jon asked about?", limit=5, mode="lexical")
        assert found.mode == "lexical"
        assert [h.memory.id for h in found.hits] == [q.id, a.id]
        assert found.hits[0].score > found.hits[1].score > 0
        # Hybrid search may add vector neighbours, but after the two.
        hybrid = c.search("Where is the dance studio Jon asked about?", limit=5).hits
        assert [h.memory.id for h in hybrid][:2] == [q.id, a.id]
