"""Searching one hnswlib graph: unfiltered, post-filtered, or filtered inside the graph.

The graph belongs to a VectorIndex (vector_index.py), which holds its read
lock around every call here; these functions only read the graph.

Filters: one index with a filter, or one index per workspace
------------------------------------------------------------
hnswlib 0.8 filters *during* the search: it walks disallowed nodes too and
goes on until it holds ``ef`` allowed ones, calling the Python filter (about
1 us a call) for every node it considers, so the cost grows as ef/share.
Measured with ``--filters`` (100k vectors, k=10, ef=128; p50/p99 ms and
recall@10 against an exact search of the allowed subset; random subsets):

    allowed  hnswlib filter      query(allowed,      one index per      exact scan of
                                 share=s)*           workspace          the subset**
    100%     0.54/0.67                               0.54/0.67
    50%      1.39/1.62  1.000    0.55/0.68  1.000    0.47/0.59  1.000   1.7
    10%      5.60/6.55  .9997    1.72/1.97  .9961    0.33/0.42  .9977   0.35-8
    1%       29.1/33.1  1.000    (hnswlib filter)    0.10/0.15  .9997   0.03

    * an unfiltered search for 4k/share neighbours, filtered afterwards,
      while that is at most 400 (share >= 10% at k=10); hnswlib's filter
      beyond. Without the hint, a first search of max(ef, 4k) estimates the
      share (10%: 2.20/6.91 ms, .9995).
    ** the subset's vectors already in a numpy array (timings vary with
       BLAS threads). Read from SQLite, 1,000 vectors cost 1.8 ms and
       10,000 cost 56 ms.

A filter is cheap when it keeps most of the index and ruinous when it keeps
little (a 1% workspace misses the 10 ms budget at 100k), while a small index
of its own is fast at any share, with recall as good. Search scoped to
the current workspace is the hot path (hook briefings, prompt recall), and
a workspace is usually a small share of the store. Hence the choice: **one
index per workspace** (``name``, e.g. a hash of the workspace, keeps their
files apart in one directory; each saves with the store's change sequence), with ``query(allowed,
share=...)`` inside it for the other filters (kind, tier, tags, time), which
usually keep a large share. A search across workspaces queries each index
and merges by similarity (one model: cosines are comparable). The price is a
fixed ~2.7 MB of RSS per hnswlib index (measured; 65,536 label mutexes) and
one set of files per workspace: fine for tens of workspaces. With hundreds,
tiny workspaces are better scored exactly (1,000 vectors: 0.03 ms from
memory) than given a graph of their own.

Results
-------
Similarities are cosine similarities (1 - hnswlib's cosine distance), highest
first. ``k`` larger than the live count is fine: fewer results come back. The
search uses ``max(ef, k)`` candidates (hnswlib's own rule), so ``ef`` only
needs to be set once, after creation and after every load.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMPTY",
    "Allowed",
    "Neighbours",
    "filtered",
    "nearest",
    "neighbours",
]

Ids = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]
Allowed = Callable[[int], bool]

# Post-filtering asks for OVERSAMPLE * k / share neighbours, and is used only
# while that is at most POST_FILTER_MAX (see "Filters" above).
OVERSAMPLE = 4
POST_FILTER_MAX = 400


class Neighbours(NamedTuple):
    """The labels found and their cosine similarities, most similar first."""

    ids: Ids
    similarities: Floats


EMPTY = Neighbours(np.empty(0, np.int64), np.empty(0, np.float32))


class _Filter:
    """Wraps a caller's filter for hnswlib: never raises into C++, remembers what passed.

    An exception thrown through hnswlib's search would skip its cleanup, so
    the first one is kept and re-raised after the search. The labels that
    passed are kept because hnswlib refuses to return fewer than k results;
    when it refuses, those labels are exactly what it had found.
    """

    __slots__ = ("allowed", "error", "passed")

    def __init__(self, allowed: Allowed | None) -> None:
        self.allowed = allowed
        self.error: BaseException | None = None
        self.passed: list[int] = []

    def __call__(self, label: int) -> bool:
        if self.allowed is not None:
            try:
                if not self.allowed(label):
                    return False
            except BaseException as e:  # re-raised by check()
                if self.error is None:
                    self.error = e
                return False
        self.passed.append(label)
        return True

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def nearest(graph: Any, q: Floats, k: int) -> Neighbours:
    """Unfiltered k nearest of one query row `q` (shape (1, dim); k <= live count)."""
    try:
        labels, dists = graph.knn_query(q, k=k, num_threads=1)
    except RuntimeError:
        # hnswlib found fewer than k (part of the graph cut off by deletions;
        # rare) and refuses to return them. Search again, recording.
        guard = _Filter(None)
        try:
            labels, dists = graph.knn_query(q, k=k, num_threads=1, filter=guard)
        except RuntimeError:
            return _rank(graph, q[0], guard.passed, k)
    return neighbours(labels[0], dists[0])


def filtered(
    graph: Any, q: Floats, k: int, allowed: Allowed, *, share: float | None, live: int
) -> Neighbours:
    """The k nearest that pass `allowed` (k <= live, the graph's live count)."""
    found = _post_filtered(graph, q, k, allowed, share, live)
    return found if found is not None else _graph_filtered(graph, q, k, allowed)


def _post_filtered(
    graph: Any, q: Floats, k: int, allowed: Allowed, share: float | None, live: int
) -> Neighbours | None:
    """Search unfiltered for enough extra neighbours that k of them pass, if that is cheap.

    Without a hint, a first search of max(ef, OVERSAMPLE * k) both serves
    broad filters and estimates the share; a second, larger one follows if
    it is still cheap. None means "too selective: filter inside the graph".
    """
    ef = int(graph.ef)
    want = max(ef, OVERSAMPLE * k) if not share else math.ceil(OVERSAMPLE * k / share)
    for _ in range(2):
        n = min(live, want)
        if n > POST_FILTER_MAX:
            return None
        found = nearest(graph, q, n)
        keep = [i for i, label in enumerate(found.ids.tolist()) if allowed(label)]
        # Accept when the k-th match lies in the first half of what came back:
        # the tail of a long HNSW result list is its least accurate part.
        if n == live or (len(keep) >= k and keep[k - 1] < n // 2):
            sel = keep[:k]
            return Neighbours(found.ids[sel], found.similarities[sel])
        if share:
            return None  # the hint was optimistic
        want = math.ceil(OVERSAMPLE * k * n / max(len(keep), 1))
    return None


def _graph_filtered(graph: Any, q: Floats, k: int, allowed: Allowed) -> Neighbours:
    """hnswlib's own filtered search: one Python call per node it visits."""
    guard = _Filter(allowed)
    try:
        labels, dists = graph.knn_query(q, k=k, num_threads=1, filter=guard)
    except RuntimeError:
        # Fewer than k pass; hnswlib refuses to return them, and `guard.passed`
        # holds exactly what it found.
        guard.check()
        return _rank(graph, q[0], guard.passed, k)
    guard.check()
    return neighbours(labels[0], dists[0])


def _rank(graph: Any, q: Floats, found: list[int], k: int) -> Neighbours:
    """Exact similarities of a few labels (hnswlib stores unit vectors)."""
    labels = np.unique(np.asarray(found, dtype=np.int64))
    if len(labels) == 0:
        return EMPTY
    stored = np.asarray(graph.get_items(labels, return_type="numpy"), np.float32)
    norm = float(np.linalg.norm(q))
    sims = (stored @ q) / norm if norm else np.zeros(len(labels), np.float32)
    order = np.argsort(-sims, kind="stable")[:k]
    return Neighbours(labels[order], np.clip(sims[order], -1.0, 1.0).astype(np.float32))


def neighbours(labels: npt.NDArray[Any], dists: npt.NDArray[Any]) -> Neighbours:
    """Neighbours from one row of hnswlib's (labels, distances)."""
    # Rounding can take a unit vector's similarity to itself a hair past 1.
    sims = np.clip(1.0 - dists, -1.0, 1.0).astype(np.float32)
    return Neighbours(labels.astype(np.int64), sims)
