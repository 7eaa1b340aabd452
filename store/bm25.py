"""SQLite's bm25() reproduced for a few memories, and what it needs from the index.

search.py ranks most candidates with SQLite's own bm25(), but scores the
query's common words in Python (BM25) for the few best candidates, from
their text: bm25() would read each common word's whole doclist. The
tokenizer, the index's totals and the IDF here are the same as SQLite's, so
both scores agree.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import apsw

# The tokenizer of memories_fts (schema v1): query words and, when a few
# memories are re-scored, their text are cut and stemmed with it, so that
# both agree with the index.
TOKENIZER = "porter"
TOKENIZER_ARGS = ("unicode61", "remove_diacritics", "2")


@dataclass(frozen=True, slots=True)
class Term:
    """A query word, its index tokens, and what it costs and weighs.

    `df` is how many searchable memories contain the word (for BM25's IDF)
    and `cost` how many postings FTS5 walks to match it: the same for a
    word of one token. A word the tokenizer cuts into several tokens
    ("parse_config") is searched as a phrase: its walk is driven by its
    rarest token, and its own count is taken exactly when that walk is
    affordable (see search.phrase_frequency).
    """

    word: str
    tokens: tuple[str, ...]
    df: int
    cost: int

    @property
    def phrase(self) -> str:
        return f'"{self.word}"'


class Reader:
    """What search keeps per connection: the tokenizer and a vocabulary table
    (a TEMP table, so it works on read-only connections too)."""

    def __init__(self, conn: apsw.Connection) -> None:
        conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.reverie_fts_terms "
            "USING fts5vocab(main, memories_fts, row)"
        )
        self.tokenizer = conn.fts5_tokenizer(TOKENIZER, list(TOKENIZER_ARGS))

    def tokens(self, text: str, reason: int = apsw.FTS5_TOKENIZE_DOCUMENT) -> list[str]:
        return [str(t[0]) for t in self.tokenize(text, reason)]

    def tokenize(
        self, text: str, reason: int = apsw.FTS5_TOKENIZE_DOCUMENT
    ) -> list[tuple[str, ...]]:
        """Tokens as 1-tuples (the tokenizer's own form without offsets: a token with
        colocated synonyms would be a longer tuple; porter has none)."""
        return cast(
            list[tuple[str, ...]],
            self.tokenizer(text.encode(), reason, None, include_offsets=False),
        )


_readers: weakref.WeakKeyDictionary[apsw.Connection, Reader] = weakref.WeakKeyDictionary()
_readers_lock = threading.Lock()


def reader(conn: apsw.Connection) -> Reader:
    with _readers_lock:
        state = _readers.get(conn)
        if state is None:
            state = _readers[conn] = Reader(conn)
        return state


# SQLite's bm25() parameters, which BM25.score reproduces.
BM25_K1 = 1.2
BM25_B = 0.75
MIN_IDF = 1e-6  # bm25() floors the IDF of a term in half the rows or more to this


def _varints(data: bytes) -> Iterator[int]:
    """SQLite varints (big-endian, 7 bits a byte, the 9th byte whole), in order."""
    pos = 0
    while pos < len(data):
        value = 0
        for i in range(9):
            byte = data[pos + i]
            if i == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        pos += i + 1
        yield value


def index_totals(conn: apsw.Connection) -> tuple[int, int]:
    """(memories in the full-text index, tokens in all of them): what bm25() uses.

    FTS5 keeps both in its "averages" record, row 1 of the %_data table (the
    row count, then the token count of each column): one read, where
    count(*) would walk the whole content table.
    """
    block = conn.execute("SELECT block FROM memories_fts_data WHERE id = 1").get
    if not isinstance(block, bytes) or not block:
        return 0, 0
    rows, *columns = _varints(block)
    return rows, sum(columns)


def idf(df: int, rows: int) -> float:
    """BM25's inverse document frequency, as SQLite's bm25() computes it."""
    return max(math.log((rows - df + 0.5) / (df + 0.5)), MIN_IDF)


class BM25:
    """SQLite's bm25() for a few memories, computed in Python from their text.

    bm25() counts each query phrase's memories on every query, by reading
    its whole doclist: for a word in half a million memories that alone
    takes tens of milliseconds. Here the counts come from the (cached)
    vocabulary and only the memories asked for are scored, from their
    content and tags (the indexed columns, both of weight 1), cut by the
    index's own tokenizer.
    """

    def __init__(self, conn: apsw.Connection, terms: list[Term]) -> None:
        self._reader = reader(conn)
        rows, tokens = index_totals(conn)
        # The tokenizer yields 1-tuples: single-token terms are keyed the same way.
        self._words: dict[tuple[str, ...], float] = {}
        self._phrases: list[tuple[tuple[str, ...], float]] = []
        for t in terms:
            if len(t.tokens) == 1:
                self._words[t.tokens] = self._words.get(t.tokens, 0.0) + idf(t.df, rows)
            elif t.tokens:
                self._phrases.append((t.tokens, idf(t.df, rows)))
        self._per_token = BM25_K1 * BM25_B * rows / max(1, tokens)

    def score(self, content: str, tags: str) -> float:
        columns = [self._reader.tokenize(content)]
        if tags != "[]":
            columns.append(self._reader.tokenize(tags))
        norm = BM25_K1 * (1 - BM25_B) + self._per_token * sum(map(len, columns))
        tf: dict[tuple[str, ...], int] = {}
        words = self._words
        for column in columns:
            for token in column:
                if token in words:
                    tf[token] = tf.get(token, 0) + 1
        found = [(n, words[token]) for token, n in tf.items()]
        for phrase, weight in self._phrases:
            n = sum(_occurrences(phrase, column) for column in columns)
            if n:
                found.append((n, weight))
        return sum(w * n * (BM25_K1 + 1) / (n + norm) for n, w in found)


def _occurrences(phrase: tuple[str, ...], column: list[tuple[str, ...]]) -> int:
    """How often the tokens of `phrase` follow each other in `column` (1-tuples)."""
    words = [(token,) for token in phrase]
    n = len(words)
    return sum(1 for i in range(len(column) - n + 1) if column[i : i + n] == words)
