"""Lexical search: query words, morphology, dates named in the query, neighbour context.

Most tests run store/search.py on a real SQLite database built with the real
schema and store functions; the last one goes through a real daemon.
"""

from __future__ import annotations

import datetime as dt
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
