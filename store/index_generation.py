"""What the vector indexer serves: a generation (one model's embedder, index and
workspace indexes, built and served together), its progress, and the slice
of it REM reads. The indexer's task (store/indexer.py) builds, follows and
saves generations; these are its data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from reverie.store.embedding import Embedder, TermWeightedEmbedder, Vectors
from reverie.store.scoped_index import Members, ScopedIndexes
from reverie.store.vector_index import Neighbours, VectorIndex

# Document frequencies of query terms, and the collection size (for IDF weights).
DocFreq = Callable[[list[str]], tuple[Mapping[str, int], int]]


@dataclass(slots=True)
class Progress:
    phase: str = "starting"  # starting, rebuilding, ready, failed, off
    model: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    started: float = field(default_factory=time.monotonic)


class IndexView(NamedTuple):
    """One workspace's slice of the serving index, for REM (phases/rem_pairs.py).

    `seq`: the store's change sequence the index reflects (memories with a
    higher `seq` may be missing or stale in it). `search(vectors, k)`: the k
    nearest indexed memories of that workspace to each row (blocking).
    """

    seq: int
    search: Callable[[Vectors, int], list[Neighbours]]


class Abandoned(Exception):
    """A rebuild stopped because the daemon is stopping."""


class Generation:
    """One model's embedder, index and membership, built and served together."""

    def __init__(self, embedder: Embedder, index: VectorIndex, seq: int) -> None:
        self.embedder = embedder
        self.index = index
        self.seq = seq
        self.members = Members()
        self.scoped = ScopedIndexes(index.dim, index.model_id, index.params)
        # Vectors computed since the last save: stored in SQLite with the
        # index, off the write path (a crash only means re-embedding them).
        self.unsaved: dict[int, tuple[str, Vectors]] = {}
        self.dirty = False
        # When the next save is due (trio clock; set once the generation serves).
        self.save_due = 0.0
        # While clients are served, the index files are not rewritten before this
        # (trio clock; IndexConfig.busy_file_save_s); the vectors still are.
        self.files_due = 0.0


def query_vector(embedder: Embedder, query: str, doc_freq: DocFreq) -> Vectors:
    if isinstance(embedder, TermWeightedEmbedder):
        dfs, n_docs = doc_freq(embedder.query_terms(query))
        rows = embedder.embed_query(query, dfs, n_docs)
    else:
        rows = embedder.embed([query])
    return rows[0:1].reshape(-1)
