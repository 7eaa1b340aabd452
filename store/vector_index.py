"""The HNSW vector index (hnswlib, cosine space), safe to share between threads.

The index is derived data: every vector also lives in SQLite with its model
id and dimension, so anything wrong with the index (missing, corrupt, built
by another model) is repaired by rebuilding it. Labels are memory ids.

Updates and deletions
---------------------
Deleting marks a label deleted (hnswlib's ``mark_deleted``): the node stays
in the graph as a stepping stone but is never returned. The index is created
with ``allow_replace_deleted=True`` and new labels are added with
``replace_deleted=True``, so the slots of deleted vectors are reused: a store
whose memories are merged, superseded and forgotten does not grow its index
without bound, and needs no periodic rebuild to reclaim space.

Re-adding a label that is present (an edited memory, a re-embedding) updates
it in place: hnswlib's ``addPoint`` on an existing label calls ``updatePoint``,
which overwrites the vector and repairs the neighbour lists around it. The
label keeps its slot; nothing is duplicated. Re-adding a *deleted* label
first unmarks it (so the same in-place update applies; with replacement
enabled hnswlib refuses to update a deleted label directly). One thing must
never happen: ``replace_deleted=True`` with a label that is still present;
hnswlib would then map the label to a recycled slot while the old slot keeps
answering with the same label. ``add`` therefore sorts each batch into
present and new labels and only sends new ones down that path.

hnswlib has no cheap "is this label live?", so the index keeps the set of
live labels itself (about 62 MB at 1M labels, 4% of the index) and saves it
with the index.

Threads
-------
hnswlib allows concurrent searches but not a search during an insertion.
Searches share an RWLock; add, remove and set_ef take it exclusively, and
a waiting writer holds off new searches so that it cannot starve. A save
only reads the graph, so while hnswlib writes its file the save shares the
lock with searches and holds the ``_maintenance`` lock, which every writer
takes *before* asking for the exclusive lock: a writer arriving then waits
on ``_maintenance`` without holding off searches. Checksums, fsyncs and the
header commit happen after both locks are released.

Every call blocks; from trio, run them with ``trio.to_thread.run_sync``.

Defaults: M=24, ef_construction=128, ef=128
-------------------------------------------
Measured with tests/bench/bench_vector_index.py and its vectors: clustered,
dim 384, a query's nearest neighbour at cosine ~0.67 (like MiniLM on related
sentences), fresh queries, recall@10 against brute force, queries on one
thread. First a sweep at 50k vectors, built on one thread and timed in CPU
seconds so that other load on the machine matters less (wall-clock
equivalent: --n 50000 --threads 1 --m M --ef-construction C --ef 32,64,128),
and a churn check: the scenario of tests/test_vector_index.py's churn test
(2000 fixed vectors, 10,000 added, 8,000 of them deleted, slots reused) run
for 1000 steps, counting fixed vectors that their own query no longer finds:

    M   ef_c  build/s/core  ef=32          ef=64          ef=128         lost in churn
    16   64   4612          0.10 ms .925   0.17 ms .971   0.31 ms .991   447 / 100k
    32   64   4016          0.13 ms .986   0.24 ms .996   0.47 ms 1.000  883 / 100k
    16  100   3357          0.09 ms .946   0.16 ms .976   0.31 ms .993   0
    24  100   2573          0.13 ms .983   0.23 ms .997   0.43 ms 1.000  5 / 100k
    24  128   2104          0.15 ms .987   0.26 ms 1.000  0.49 ms 1.000  0
    32  128   1892          0.16 ms .997   0.28 ms .997   0.54 ms 1.000  0

A store that merges, supersedes and forgets keeps rewiring its graph, and
hnswlib repairs the links around a moved or reused node only within
ef_construction candidates: a low ef_construction builds fast and then loses
nodes. M=24 with ef_construction=128 is the cheapest setting that is both
churn-proof and near-perfect at 50k. With it (2 build threads; a 2-core
machine shared with other work):

    vectors  build/s  ef=128, k=10: p50/p99, recall@10   save    load*   RSS after load
    100k     1667     0.51/0.63 ms, 1.0000               0.44 s  0.20 s  225 MiB
    1M       2675     0.41/0.87 ms, 0.9924               4.6 s   4.8 s   1864 MiB

    * in a fresh process, both checksums verified. 1756 bytes per vector.

At 1M, recall@10 is 0.972 at ef=64, 0.992 at 128, 0.996 at 192 and 0.998
at 256 (p50 0.35, 0.41, 0.50, 0.58 ms): every setting is far below the
budgets (search p99 10 ms at 100k and 25 ms at 1M, embedding included;
start-up 3 s at 100k). ef=128 is the default because the cost of filtered
searches (below) grows with ef.

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

import contextlib
import dataclasses
import math
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import hnswlib
import numpy as np
import numpy.typing as npt
from reverie.errors import StorageError, StorageFull
from reverie.store.durable import (
    checksum_and_sync,
    create_private,
    publish,
    storage_error,
    temp_path,
)
from reverie.store.index_file import (
    FORMAT_VERSION,
    MAGIC,
    NAME_PATTERN,
    CorruptIndex,
    FileRef,
    IndexHeader,
    check_header,
    check_layout,
    data_names,
    header_path,
    read_header,
    remove_stale,
    verified_path,
    write_header,
)
from reverie.store.rwlock import RWLock

__all__ = [
    "CorruptIndex",
    "HnswParams",
    "IndexHeader",
    "Neighbours",
    "VectorIndex",
    "build_index",
]

Ids = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]
Allowed = Callable[[int], bool]
Progress = Callable[[int, int], None]

DEFAULT_NAME = "vectors"
# Post-filtering asks for OVERSAMPLE * k / share neighbours, and is used only
# while that is at most POST_FILTER_MAX (see "Filters" in the module docstring).
OVERSAMPLE = 4
POST_FILTER_MAX = 400


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HnswParams:
    """Tuning of the graph; see the module docstring and the benchmark for the figures.

    ``m`` and ``ef_construction`` are fixed when an index is built (a loaded
    index keeps the ones it was built with); ``ef`` and ``threads`` apply at
    once, including to a loaded index.
    """

    m: int = 24
    ef_construction: int = 128
    ef: int = 128
    # Threads for batch insertions (rebuilds). Searches always use the caller's thread.
    threads: int = 2
    capacity: int = 1024
    seed: int = 100

    def __post_init__(self) -> None:
        if self.m < 2 or self.ef_construction < 1 or self.ef < 1:
            raise ValueError(f"invalid HNSW parameters {self}")
        if self.threads < 1 or self.capacity < 1:
            raise ValueError(f"invalid HNSW parameters {self}")


class Neighbours(NamedTuple):
    """The labels found and their cosine similarities, most similar first."""

    ids: Ids
    similarities: Floats


_EMPTY = Neighbours(np.empty(0, np.int64), np.empty(0, np.float32))


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


class VectorIndex:
    """One hnswlib index of unit vectors of one embedding model."""

    def __init__(self, dim: int, *, model_id: str, params: HnswParams | None = None) -> None:
        """An empty index with room for `params.capacity` vectors (it grows as needed)."""
        self._setup(dim, model_id, params)
        self._index.init_index(
            max_elements=self._params.capacity,
            M=self._params.m,
            ef_construction=self._params.ef_construction,
            random_seed=self._params.seed,
            allow_replace_deleted=True,
        )
        self._index.set_ef(self._params.ef)

    def _setup(self, dim: int, model_id: str, params: HnswParams | None) -> None:
        if dim < 1:
            raise ValueError(f"dimension must be positive, not {dim}")
        self._params = params or HnswParams()
        self._dim = dim
        self._model_id = model_id
        self._index = hnswlib.Index(space="cosine", dim=dim)
        self._live: set[int] = set()
        self._lock = RWLock()
        self._maintenance = threading.Lock()  # serialises writers and saves; see module doc
        self._saving = threading.Lock()

    # -- facts ----------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def params(self) -> HnswParams:
        return self._params

    @property
    def m(self) -> int:
        """The graph's M (for a loaded index, the one it was built with)."""
        return int(self._index.M)

    @property
    def ef_construction(self) -> int:
        return int(self._index.ef_construction)

    @property
    def ef(self) -> int:
        return int(self._index.ef)

    @property
    def count(self) -> int:
        """Slots in use: live vectors plus deleted ones not yet reused."""
        return int(self._index.element_count)

    @property
    def live_count(self) -> int:
        return len(self._live)

    @property
    def capacity(self) -> int:
        return int(self._index.max_elements)

    def contains(self, label: int) -> bool:
        with self._lock.read():
            return int(label) in self._live

    def ids(self) -> Ids:
        """The live labels, sorted."""
        with self._lock.read():
            out = np.fromiter(self._live, np.int64, len(self._live))
        out.sort()
        return out

    def set_ef(self, ef: int) -> None:
        if ef < 1:
            raise ValueError(f"ef must be positive, not {ef}")
        with self._maintenance, self._lock.write():
            self._index.set_ef(ef)

    # -- writing --------------------------------------------------------------

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Insert or update vectors; within one batch the last vector of an id wins."""
        labels, rows = self._batch(ids, vectors)
        if len(labels) == 0:
            return
        with self._maintenance, self._lock.write():
            self._add_locked(labels, rows)

    def remove(self, ids: npt.ArrayLike) -> int:
        """Mark labels deleted; ids not in the index are ignored. Returns how many were live."""
        labels = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1)).tolist()
        removed = 0
        with self._maintenance, self._lock.write():
            for label in labels:
                if label in self._live:
                    self._index.mark_deleted(label)
                    self._live.discard(label)
                    removed += 1
        return removed

    def _batch(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> tuple[Ids, Floats]:
        labels = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        if rows.ndim == 1 and len(labels) == 1:
            rows = rows.reshape(1, -1)
        if rows.ndim != 2 or rows.shape != (len(labels), self._dim):
            raise ValueError(
                f"expected {len(labels)} vectors of dimension {self._dim}, got shape {rows.shape}"
            )
        if len(labels) and labels.min() < 0:
            raise ValueError("ids must not be negative")
        if not np.isfinite(rows).all():
            raise ValueError("vectors must be finite (a NaN would poison the graph)")
        # hnswlib inserts a batch in parallel: the same label twice in one batch
        # would race with itself. Keep each label's last row.
        _, last = np.unique(labels[::-1], return_index=True)
        if len(last) != len(labels):
            keep = np.sort(len(labels) - 1 - last)
            labels, rows = labels[keep], rows[keep]
        return labels, rows

    def _add_locked(self, labels: Ids, rows: Floats) -> None:
        live = np.fromiter((x in self._live for x in labels.tolist()), np.bool_, len(labels))
        present: list[int] = np.flatnonzero(live).tolist()
        fresh: list[int] = []
        revived = 0
        for i in np.flatnonzero(~live).tolist():
            try:
                # Deleted but still in the graph: revive it, then update in place.
                self._index.unmark_deleted(int(labels[i]))
                present.append(i)
                revived += 1
            except RuntimeError:  # "Label not found": a new label
                fresh.append(i)
        threads = self._params.threads
        try:
            if present:
                sel = np.array(sorted(present))
                self._index.add_items(rows[sel], labels[sel], num_threads=threads)
            if fresh:
                # New labels fill deleted slots first; only the rest need room.
                free_slots = int(self._index.element_count) - len(self._live) - revived
                self._reserve(len(fresh) - free_slots)
                sel = np.array(fresh)
                self._index.add_items(
                    rows[sel], labels[sel], num_threads=threads, replace_deleted=True
                )
        except RuntimeError as e:
            self._resync(labels)
            raise StorageError(f"vector index refused an insertion: {e}") from e
        self._live.update(labels.tolist())

    def _reserve(self, extra: int) -> None:
        """Make room for `extra` more slots, doubling to keep resizes rare."""
        need = int(self._index.element_count) + extra
        capacity = int(self._index.max_elements)
        if need > capacity:
            try:
                self._index.resize_index(max(need, 2 * capacity))
            except (RuntimeError, MemoryError) as e:
                raise StorageFull(f"cannot grow the vector index to {need} vectors: {e}") from e

    def _resync(self, labels: Ids) -> None:
        """After a failed insertion, make the live set and hnswlib's marks agree again."""
        for label in labels.tolist():
            if label in self._live:
                continue
            with contextlib.suppress(RuntimeError):
                self._index.mark_deleted(label)  # revived or half-inserted: hide it

    # -- searching ------------------------------------------------------------

    def query(
        self,
        vector: npt.ArrayLike,
        k: int,
        allowed: Allowed | None = None,
        *,
        share: float | None = None,
    ) -> Neighbours:
        """The k nearest live vectors (fewer if fewer exist or pass `allowed`).

        `share`, if known, is the fraction of live ids that `allowed` accepts
        (e.g. a workspace's count over the total, from SQLite): it lets the
        search pick its strategy without a probe. See "Filters" above.
        """
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        if q.shape != (self._dim,):
            raise ValueError(f"expected one vector of dimension {self._dim}, got {q.shape}")
        with self._lock.read():
            return self._query_one(q.reshape(1, -1), k, allowed, share)

    def query_many(
        self,
        vectors: npt.ArrayLike,
        k: int,
        allowed: Allowed | None = None,
        *,
        share: float | None = None,
    ) -> list[Neighbours]:
        """`query` for each row. Unfiltered, the rows go to hnswlib as one batch."""
        qs = np.ascontiguousarray(vectors, dtype=np.float32)
        if qs.ndim != 2 or qs.shape[1] != self._dim:
            raise ValueError(f"expected vectors of dimension {self._dim}, got shape {qs.shape}")
        with self._lock.read():
            kk = min(k, len(self._live))
            if kk <= 0 or len(qs) == 0:
                return [_EMPTY] * len(qs)
            if allowed is None:
                try:
                    labels, dists = self._index.knn_query(
                        qs, k=kk, num_threads=self._params.threads
                    )
                    return [_neighbours(labels[i], dists[i]) for i in range(len(qs))]
                except RuntimeError:
                    pass  # some row has fewer than kk results: one row at a time
            return [self._query_one(row.reshape(1, -1), k, allowed, share) for row in qs]

    def _query_one(
        self, q: Floats, k: int, allowed: Allowed | None, share: float | None
    ) -> Neighbours:
        kk = min(k, len(self._live))
        if kk <= 0:
            return _EMPTY
        if allowed is None:
            return self._nearest(q, kk)
        found = self._post_filtered(q, kk, allowed, share)
        return found if found is not None else self._graph_filtered(q, kk, allowed)

    def _nearest(self, q: Floats, k: int) -> Neighbours:
        """Unfiltered k nearest (k <= live count)."""
        try:
            labels, dists = self._index.knn_query(q, k=k, num_threads=1)
        except RuntimeError:
            # hnswlib found fewer than k (part of the graph cut off by deletions;
            # rare) and refuses to return them. Search again, recording.
            guard = _Filter(None)
            try:
                labels, dists = self._index.knn_query(q, k=k, num_threads=1, filter=guard)
            except RuntimeError:
                return self._rank(q[0], guard.passed, k)
        return _neighbours(labels[0], dists[0])

    def _post_filtered(
        self, q: Floats, k: int, allowed: Allowed, share: float | None
    ) -> Neighbours | None:
        """Search unfiltered for enough extra neighbours that k of them pass, if that is cheap.

        Without a hint, a first search of max(ef, OVERSAMPLE * k) both serves
        broad filters and estimates the share; a second, larger one follows if
        it is still cheap. None means "too selective: filter inside the graph".
        """
        live = len(self._live)
        want = max(self.ef, OVERSAMPLE * k) if not share else math.ceil(OVERSAMPLE * k / share)
        for _ in range(2):
            n = min(live, want)
            if n > POST_FILTER_MAX:
                return None
            found = self._nearest(q, n)
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

    def _graph_filtered(self, q: Floats, k: int, allowed: Allowed) -> Neighbours:
        """hnswlib's own filtered search: one Python call per node it visits."""
        guard = _Filter(allowed)
        try:
            labels, dists = self._index.knn_query(q, k=k, num_threads=1, filter=guard)
        except RuntimeError:
            # Fewer than k pass; hnswlib refuses to return them, and `guard.passed`
            # holds exactly what it found.
            guard.check()
            return self._rank(q[0], guard.passed, k)
        guard.check()
        return _neighbours(labels[0], dists[0])

    def _rank(self, q: Floats, found: list[int], k: int) -> Neighbours:
        """Exact similarities of a few labels (hnswlib stores unit vectors)."""
        labels = np.unique(np.asarray(found, dtype=np.int64))
        if len(labels) == 0:
            return _EMPTY
        stored = np.asarray(self._index.get_items(labels, return_type="numpy"), np.float32)
        norm = float(np.linalg.norm(q))
        sims = (stored @ q) / norm if norm else np.zeros(len(labels), np.float32)
        order = np.argsort(-sims, kind="stable")[:k]
        return Neighbours(labels[order], np.clip(sims[order], -1.0, 1.0).astype(np.float32))

    # -- saving and loading ---------------------------------------------------

    def save(self, directory: Path, *, seq: int, name: str = DEFAULT_NAME) -> IndexHeader:
        """Save atomically; `seq` is the store's change sequence this index reflects.

        After it returns, `load` finds this index; a crash at any moment before
        that leaves the previous save loadable (see index_file.py). Searches go
        on during a save; writers wait only while hnswlib writes its file.
        """
        _check_name(name)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(e, f"cannot create index directory {directory}") from e
        data_name, ids_name = data_names(name, seq, secrets.token_hex(4))
        data_tmp, ids_tmp = temp_path(directory / data_name), temp_path(directory / ids_name)
        with self._saving:  # one save at a time: header commits never interleave
            try:
                with self._maintenance, self._lock.read():
                    ids, elements, expected = self._dump(directory, data_tmp)
                data = _sync_data(directory, data_tmp, data_name, expected)
                ids_ref = _write_ids(ids_tmp, ids_name, ids)
                header = self._header(seq, len(ids), elements, data, ids_ref)
                publish(data_tmp, directory / data_name)
                publish(ids_tmp, directory / ids_name)
                write_header(directory, name, header)
            except BaseException as e:
                remove_stale(directory, name, _committed(directory, name))
                if isinstance(e, OSError):
                    raise storage_error(e, f"cannot save the vector index in {directory}") from e
                raise
            remove_stale(directory, name, {data_name, ids_name})
        return header

    def _dump(self, directory: Path, data_tmp: Path) -> tuple[Ids, int, int]:
        """hnswlib's file and a snapshot of the live ids (read lock and no writer held)."""
        expected = int(self._index.index_file_size())
        ids = np.fromiter(self._live, np.int64, len(self._live))
        _check_space(directory, expected + 8 * len(ids))
        create_private(data_tmp)  # a real errno if the directory is not writable
        self._index.save_index(str(data_tmp))
        return ids, int(self._index.element_count), expected

    def _header(
        self, seq: int, count: int, elements: int, data: FileRef, ids: FileRef
    ) -> IndexHeader:
        return IndexHeader(
            magic=MAGIC,
            format=FORMAT_VERSION,
            model_id=self._model_id,
            dim=self._dim,
            space="cosine",
            count=count,
            elements=elements,
            seq=seq,
            m=self.m,
            ef_construction=self.ef_construction,
            data=data,
            ids=ids,
            saved_at=time.time(),
        )

    @classmethod
    def load(
        cls,
        directory: Path,
        expected_model_id: str,
        expected_dim: int,
        *,
        params: HnswParams | None = None,
        name: str = DEFAULT_NAME,
    ) -> tuple[VectorIndex, IndexHeader]:
        """Load the last saved index; raise CorruptIndex if it cannot be used as is."""
        _check_name(name)
        hpath = header_path(directory, name)
        header = read_header(directory, name)
        check_header(header, hpath, expected_model_id, expected_dim)
        data_path = verified_path(directory, header.data)
        ids_path = verified_path(directory, header.ids)
        check_layout(data_path, header)
        ids = np.fromfile(ids_path, dtype="<i8")
        if len(ids) != header.count:
            raise CorruptIndex(f"index {hpath}: ids file disagrees", path=hpath)
        index = cls.__new__(cls)
        index._setup(expected_dim, expected_model_id, params)
        try:
            index._index.load_index(str(data_path), max_elements=0, allow_replace_deleted=True)
        except RuntimeError as e:
            raise CorruptIndex(f"hnswlib cannot load {data_path}: {e}", path=data_path) from e
        if int(index._index.element_count) != header.elements:
            raise CorruptIndex(f"index {hpath}: element count disagrees", path=hpath)
        index._index.set_ef(index._params.ef)  # hnswlib does not save ef
        index._live = set(ids.tolist())
        return index, header


def build_index(
    batches: Iterable[tuple[npt.ArrayLike, npt.ArrayLike]],
    *,
    dim: int,
    model_id: str,
    total: int,
    params: HnswParams | None = None,
    progress: Progress | None = None,
) -> VectorIndex:
    """Build an index from (ids, vectors) batches, e.g. read from SQLite at start-up.

    `progress(done, total)` is called before the first batch and after each
    one; it may raise to abandon the build. Batches of a few thousand give a
    report every second or two (see the benchmark's build rate).
    """
    params = params or HnswParams()
    capacity = max(total, params.capacity)
    index = VectorIndex(
        dim, model_id=model_id, params=dataclasses.replace(params, capacity=capacity)
    )
    done = 0
    if progress is not None:
        progress(0, total)
    for ids, vectors in batches:
        labels = np.asarray(ids, dtype=np.int64).reshape(-1)
        index.add(labels, vectors)
        done += len(labels)
        if progress is not None:
            progress(done, max(total, done))
    return index


def _neighbours(labels: npt.NDArray[Any], dists: npt.NDArray[Any]) -> Neighbours:
    # Rounding can take a unit vector's similarity to itself a hair past 1.
    sims = np.clip(1.0 - dists, -1.0, 1.0).astype(np.float32)
    return Neighbours(labels.astype(np.int64), sims)


def _check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"index name must be letters, digits, '-' or '_', not {name!r}")


def _sync_data(directory: Path, path: Path, name: str, expected: int) -> FileRef:
    size, crc = checksum_and_sync(path)
    if size != expected:
        # hnswlib's writer does not report errors: a short file is a failed write.
        _check_space(directory, expected)
        raise StorageError(f"index data file {path} was written short ({size} of {expected})")
    return FileRef(name=name, size=size, crc32=crc)


def _write_ids(path: Path, name: str, ids: Ids) -> FileRef:
    ids.sort()
    create_private(path)
    with path.open("r+b") as f:
        f.write(ids.astype("<i8").tobytes())
    size, crc = checksum_and_sync(path)
    return FileRef(name=name, size=size, crc32=crc)


def _check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise StorageFull(
            f"saving the vector index needs {needed} bytes in {directory}, {free} are free"
        )


def _committed(directory: Path, name: str) -> set[str]:
    """The data files the current header names (to keep when cleaning up a failed save)."""
    try:
        header = read_header(directory, name)
    except (CorruptIndex, StorageError):
        return set()
    return {header.data.name, header.ids.name}
