"""REM's candidate pairs: exact blocked cosine, or HNSW neighbours from the daemon's index.

Both return the same thing: every pair of a workspace's memories with a
cosine >= `floor` and at least one changed ("dirty") member, as (row, row,
cosine), the dirty member first (the lower row when both are), sorted. The
cosine is always computed here from REM's own vectors, so the two paths
agree exactly on every pair they both find.

Exact: rows are the memories to compare, columns everything of the
workspace, in blocks of `block_cells` similarity cells; a pair of two rows
is computed once (the rows are moved to the front of a permuted copy, and a
block compares only with the columns from its own start onwards), which
halves the first, full run; the threshold is applied only to the few rows
whose maximum reaches it (np.nonzero over whole blocks took 10 of 36 s).
Measured on tests/bench/bench_dream_rem.py's 100k store (one workspace,
lexical vectors of dim 384, 2 cores, OpenBLAS ~200 GFLOP/s): the full plan
went from 71 s (every row against every column, 80-row blocks) to 24 s.

Index: k nearest of each dirty memory (k grows 4x for the rows whose k-th
neighbour is still above the floor, so a large cluster is not cut off),
then the exact cosine. One query (ef=128, ~0.4 ms on 2 threads) costs
about as much as 90k exact cells (~4.4 ns each), so the index is used only
when a changed memory's exact row would cost more (`index_min_cells`):
changed memories in a workspace of more than ~90k (a full run: ~180k). At
100k the two paths cost the same (1% changed: ~0.4 s either way; a full
run through the index: 46 s against 24 s); beyond, the exact row grows
with n and a query with log n. Memories changed after the index's sequence
(the indexer lags writes by a moment) may be missing or stale in it: each
queries the index for its indexed neighbours, and they are compared with
each other exactly. On the index path only the vectors of changed and
lagging rows and of the neighbours found are read (`RowVectors`): an
incremental run no longer reads the whole workspace's vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
from reverie.phases.cancel import NEVER, Cancel
from reverie.store.index_search import Neighbours
from reverie.store.indexer import IndexView

Floats = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
Pair = tuple[int, int, float]
QUERY_BATCH = 256  # index queries per search call: a cancel check between two (~0.1 s)


class RowVectors:
    """A workspace's vector matrix, its rows read on first use.

    The exact path needs every row (`dense`); the index path only the
    changed rows, the rows the index may not reflect, and the neighbours
    it returns, so an incremental run over a large workspace reads a few
    thousand vectors instead of all of them. The matrix is np.zeros: pages
    never written are never resident.
    """

    def __init__(self, n: int, fetch: Callable[[Ids], Floats]) -> None:
        self.n = n
        self._fetch = fetch  # rows -> their vectors, in that order
        self._m: Floats | None = None
        self._have = np.zeros(n, dtype=bool)

    @classmethod
    def dense(cls, matrix: Floats) -> RowVectors:
        out = cls(len(matrix), lambda rows: matrix[rows])
        out._m = matrix
        out._have[:] = True
        return out

    @property
    def loaded(self) -> int:
        return int(self._have.sum())

    def rows(self, rows: Ids) -> Floats:
        need = np.unique(rows[~self._have[rows]])
        if len(need):
            got = self._fetch(need)
            if self._m is None:
                self._m = np.zeros((self.n, got.shape[1]), dtype=np.float32)
            self._m[need] = got
            self._have[need] = True
        assert self._m is not None or len(rows) == 0
        return self._m[rows] if self._m is not None else np.zeros((0, 0), np.float32)

    def all(self) -> Floats:
        """The whole matrix (every row read)."""
        if self._m is None or not self._have.all():
            self.rows(np.arange(self.n, dtype=np.int64))
        assert self._m is not None
        return self._m


def candidate_pairs(
    vecs: RowVectors,
    ids: Ids,
    seqs: Ids,
    dirty: npt.NDArray[np.bool_],
    floor: float,
    *,
    block_cells: int,
    index_k: int,
    index_min_cells: int,
    view: IndexView | None,
    cancel: Cancel = NEVER,
) -> tuple[list[Pair], bool]:
    """The pairs (rows into `ids`) above `floor` with a dirty member, and whether
    the index was used.

    `ids` must be sorted ascending (rows are looked up by id).
    """
    n = len(ids)
    n_dirty = int(dirty.sum())
    if n < 2 or n_dirty == 0:
        return [], False
    use_index = view is not None and uses_index(n, n_dirty, index_min_cells)
    found: set[tuple[int, int]] = set()
    # The blocks' cosines may differ from the final ones in the last bits, and
    # lexical cosines often sit exactly on a threshold (equal feature weights):
    # a slack keeps such pairs for the one final test both paths share.
    slack = floor - 1e-5
    if use_index and view is not None:
        fresh = seqs <= view.seq
        _index_pairs(np.flatnonzero(dirty & fresh), vecs, ids, view, index_k, floor, found, cancel)
        # Rows the index may lack or hold stale: their indexed neighbours by a
        # query of their own, and each other exactly.
        lag = np.flatnonzero(~fresh)
        _index_pairs(lag, vecs, ids, view, index_k, floor, found, cancel)
        among: set[tuple[int, int]] = set()
        _exact_pairs(
            np.arange(len(lag)), vecs.rows(lag), dirty[lag], slack, block_cells, among, cancel
        )
        found |= {(int(lag[a]), int(lag[b])) for a, b in among}
    else:
        _exact_pairs(np.flatnonzero(dirty), vecs.all(), dirty, slack, block_cells, found, cancel)
    keys = sorted({_oriented(a, b, dirty) for a, b in found if dirty[a] or dirty[b]})
    if not keys:
        return [], use_index
    a = np.array([k[0] for k in keys], dtype=np.int64)
    b = np.array([k[1] for k in keys], dtype=np.int64)
    sims = np.einsum("ij,ij->i", vecs.rows(a), vecs.rows(b))
    keep = sims >= floor
    out = [
        (int(x), int(y), float(s))
        for x, y, s in zip(a[keep].tolist(), b[keep].tolist(), sims[keep].tolist(), strict=True)
    ]
    return out, use_index


def uses_index(n: int, n_dirty: int, index_min_cells: int) -> bool:
    """Whether a workspace of n memories, n_dirty changed, is searched through the index."""
    return n - n_dirty / 2 > index_min_cells


def _oriented(a: int, b: int, dirty: npt.NDArray[np.bool_]) -> tuple[int, int]:
    if dirty[a] == dirty[b]:
        return (a, b) if a < b else (b, a)
    return (a, b) if dirty[a] else (b, a)


def _exact_pairs(
    rows: Ids,
    vecs: Floats,
    dirty: npt.NDArray[np.bool_],
    floor: float,
    block_cells: int,
    found: set[tuple[int, int]],
    cancel: Cancel = NEVER,
) -> None:
    """Pairs of `rows` with every memory (one of them dirty), each computed once.

    `cancel` is checked before every block (a block is `block_cells` cells).
    """
    n = len(vecs)
    if len(rows) == 0:
        return
    block = max(1, block_cells // n)
    add: Callable[[tuple[int, int]], None] = found.add
    if len(rows) * 8 < n:
        # Few rows (an incremental run, a cluster search's next round): the
        # permuted copy below (the whole matrix) would cost more than the
        # pairs it saves; a pair of two rows is found twice and kept once.
        for start in range(0, len(rows), block):
            cancel.check()
            part = rows[start : start + block]
            sims = vecs[part] @ vecs.T
            sims[np.arange(len(part)), part] = -1.0  # each row's self-pair
            hit = np.flatnonzero(sims.max(axis=1) >= floor)
            r, c = np.nonzero(sims[hit] >= floor)
            a = part[hit[r]]
            both = dirty[a] | dirty[c]
            for x, y in zip(a[both].tolist(), c[both].tolist(), strict=True):
                add((x, y))
        return
    is_row = np.zeros(n, dtype=bool)
    is_row[rows] = True
    perm = np.concatenate([rows, np.flatnonzero(~is_row)])
    permuted = vecs[perm]
    for start in range(0, len(rows), block):
        cancel.check()
        sims = permuted[start : start + block] @ permuted[start:].T
        local = np.arange(len(sims))
        sims[local, local] = -1.0  # each row's self-pair
        # Few rows have a pair: finding them by row maximum first is ~10x
        # cheaper than np.nonzero over the whole block (10 of 36 s at 100k).
        hit = np.flatnonzero(sims.max(axis=1) >= floor)
        r, c = np.nonzero(sims[hit] >= floor)
        r = hit[r]
        keep = c > r  # column position after the row's own: each pair once, no self-pair
        a = perm[start + r[keep]]
        b = perm[start + c[keep]]
        both = dirty[a] | dirty[b]
        for x, y in zip(a[both].tolist(), b[both].tolist(), strict=True):
            add((x, y))


def _index_pairs(
    rows: Ids,
    vecs: RowVectors,
    ids: Ids,
    view: IndexView,
    k: int,
    floor: float,
    found: set[tuple[int, int]],
    cancel: Cancel = NEVER,
) -> None:
    """Pairs of `rows` with their HNSW neighbours in this workspace's candidates.

    Queried `QUERY_BATCH` rows at a time, `cancel` checked before each batch.
    """
    n = len(ids)
    todo = rows
    while len(todo):
        kk = min(k, n)
        again: list[int] = []
        for r, nb in _search(todo, vecs, view, kk, cancel):
            cols = np.searchsorted(ids, nb.ids).clip(0, n - 1)
            # Neighbours clearly below the floor are dropped here, so their
            # vectors are never read (the index's cosine can differ from the
            # exact one in the last bits: the final test decides near the floor).
            near = (ids[cols] == nb.ids) & (np.asarray(nb.similarities) >= floor - 1e-3)
            for c in cols[near].tolist():
                if c != r:
                    found.add((r, c))
            if len(nb.ids) == kk and kk < n and nb.similarities[-1] >= floor:
                again.append(r)  # all k above the floor: more may be
        todo = np.array(again, dtype=np.int64)
        k *= 4


def _search(
    todo: Ids, vecs: RowVectors, view: IndexView, k: int, cancel: Cancel
) -> Iterator[tuple[int, Neighbours]]:
    """(row, its k neighbours) for every row of `todo`, in batches between cancel checks."""
    for start in range(0, len(todo), QUERY_BATCH):
        cancel.check()
        part = todo[start : start + QUERY_BATCH]
        yield from zip(part.tolist(), view.search(vecs.rows(part), k), strict=True)
