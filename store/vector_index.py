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
on ``_maintenance`` without holding off searches. A large index is written
by a forked child (index_file.start_write: hnswlib holds the GIL while it
writes), and both locks are released as soon as fork returns. Checksums,
fsyncs and the header commit happen after both locks are released.

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
searches (index_search.py) grows with ef.

On vectors without cluster structure ef=128 misses a few: a crash-driver
store (tests/crash_driver.py: texts that are random bags of 100 words, through
the lexical embedder, every vector at cosine ~0.7 from the others) of 127,558
vectors, no churn, each vector searched for itself (k=10): 17 missed at
ef=128, 1 at 256, none at 512.

Searching, filters and results
------------------------------
The searches themselves, the measurements behind ``query(allowed, share=...)``
and behind one index per workspace (``name``), and what results look like,
are in index_search.py. Saving and loading (the file format and its commit
protocol) are in index_file.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import hnswlib
import numpy as np
import numpy.typing as npt
from reverie.errors import StorageError, StorageFull
from reverie.store.index_file import (
    FORK_MIN_BYTES,
    CorruptIndex,
    GraphFacts,
    IndexHeader,
    Snapshot,
    prepare_data_file,
    read_saved,
    save_index,
    start_write,
)
from reverie.store.index_search import EMPTY, Allowed, Neighbours, filtered, nearest, neighbours
from reverie.store.rwlock import RWLock

__all__ = [
    "DEFAULT_NAME",
    "CorruptIndex",
    "HnswParams",
    "IndexHeader",
    "Neighbours",
    "VectorIndex",
    "build_index",
]

Ids = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]

DEFAULT_NAME = "vectors"


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
    # Write saved files from a forked child (index_file.start_write): a save
    # then stalls the process's other threads for the fork, not the write.
    fork_save: bool = True

    def __post_init__(self) -> None:
        if self.m < 2 or self.ef_construction < 1 or self.ef < 1:
            raise ValueError(f"invalid HNSW parameters {self}")
        if self.threads < 1 or self.capacity < 1:
            raise ValueError(f"invalid HNSW parameters {self}")


# Insertions per hold of the exclusive lock (see VectorIndex.add).
ADD_CHUNK = 64


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

    def set_threads(self, threads: int) -> None:
        """Threads for batch insertions from now on (a rebuild uses more than catch-up)."""
        if threads < 1:
            raise ValueError(f"threads must be positive, not {threads}")
        self._params = dataclasses.replace(self._params, threads=threads)

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
        with self._maintenance:
            for i in range(0, len(labels), ADD_CHUNK):
                # The exclusive lock per chunk: searches wait for one chunk's insertions
                # (a few ms), not a whole catch-up batch's (1024: seconds on a busy machine).
                with self._lock.write():
                    self._add_locked(labels[i : i + ADD_CHUNK], rows[i : i + ADD_CHUNK])

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
        present: list[int] = self._changed(labels, rows, np.flatnonzero(live).tolist())
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

    def holds(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """For each id: whether the index already holds exactly this vector for it.

        Under the shared lock (searches go on), unlike the same check `add`
        makes under the exclusive one: the indexer drops those rows first.
        """
        labels = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(labels), -1)
        out = np.zeros(len(labels), dtype=np.bool_)
        if len(labels) == 0 or rows.shape[1] != self._dim:
            return out
        with self._lock.read():
            live = [i for i, x in enumerate(labels.tolist()) if x in self._live]
            changed = set(self._changed(labels, rows, live))
        for i in live:
            out[i] = i not in changed
        return out

    def _changed(self, labels: Ids, rows: Floats, present: list[int]) -> list[int]:
        """Those of `present` (live labels) whose vector differs from the graph's copy.

        hnswlib re-links a node's neighbours even when its vector is unchanged,
        which costs as much as an insertion and holds the exclusive lock, so
        searches wait: a light-sleep run that rewrote the metadata of 100k
        memories (a new seq each, same content) stalled searches for 20 s
        while their unchanged vectors were re-added (tests/bench/bench_load.py).
        """
        if not present:
            return present
        sel = np.array(present)
        try:
            old = self._index.get_items(labels[sel], return_type="numpy")
        except RuntimeError:
            return present  # cannot tell: update them all, as before
        # The graph holds cosine vectors normalised as hnswlib does it.
        new = rows[sel]
        new = new / (np.sqrt((new * new).sum(axis=1, keepdims=True)) + 1e-30)
        same = np.isclose(old, new, rtol=0.0, atol=1e-6).all(axis=1)
        return [i for i, s in zip(present, same.tolist(), strict=True) if not s]

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
        search pick its strategy without a probe. See "Filters" in index_search.py.
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
                return [EMPTY] * len(qs)
            if allowed is None:
                try:
                    labels, dists = self._index.knn_query(
                        qs, k=kk, num_threads=self._params.threads
                    )
                    return [neighbours(labels[i], dists[i]) for i in range(len(qs))]
                except RuntimeError:
                    pass  # some row has fewer than kk results: one row at a time
            return [self._query_one(row.reshape(1, -1), k, allowed, share) for row in qs]

    def _query_one(
        self, q: Floats, k: int, allowed: Allowed | None, share: float | None
    ) -> Neighbours:
        kk = min(k, len(self._live))
        if kk <= 0:
            return EMPTY
        if allowed is None:
            return nearest(self._index, q, kk)
        return filtered(self._index, q, kk, allowed, share=share, live=len(self._live))

    # -- saving and loading ---------------------------------------------------

    def save(self, directory: Path, *, seq: int, name: str = DEFAULT_NAME) -> IndexHeader:
        """Save atomically; `seq` is the store's change sequence this index reflects.

        After it returns, `load` finds this index; a crash at any moment before
        that leaves the previous save loadable (see index_file.py). Searches go
        on during a save; writers wait only while hnswlib writes its file.
        """
        facts = GraphFacts(self._model_id, self._dim, self.m, self.ef_construction)
        with self._saving:  # one save at a time: header commits never interleave
            return save_index(directory, name, seq, facts, self._dump)

    def _dump(self, directory: Path, data_tmp: Path) -> Snapshot:
        """hnswlib's file and a snapshot of the live ids, with no writer running.

        A large index is written by a forked child (see index_file.start_write):
        the locks are held only until fork returns, and the wait that follows
        releases the GIL. A small one, or where fork is refused, is written here.
        """
        with self._maintenance, self._lock.read():
            expected = int(self._index.index_file_size())
            ids = np.fromiter(self._live, np.int64, len(self._live))
            elements = int(self._index.element_count)
            prepare_data_file(directory, data_tmp, expected + 8 * len(ids))
            writer = None
            if self._params.fork_save and expected >= FORK_MIN_BYTES:
                writer = start_write(self._index, data_tmp, expected)
            if writer is None:
                self._index.save_index(str(data_tmp))
        if writer is not None:
            writer.wait()
        return Snapshot(ids=ids, elements=elements, size=expected)

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
        saved = read_saved(directory, name, expected_model_id, expected_dim)
        index = cls.__new__(cls)
        index._setup(expected_dim, expected_model_id, params)
        try:
            index._index.load_index(str(saved.data), max_elements=0, allow_replace_deleted=True)
        except RuntimeError as e:
            raise CorruptIndex(f"hnswlib cannot load {saved.data}: {e}", path=saved.data) from e
        if int(index._index.element_count) != saved.header.elements:
            raise CorruptIndex(f"index {saved.path}: element count disagrees", path=saved.path)
        index._index.set_ef(index._params.ef)  # hnswlib does not save ef
        index._live = set(saved.ids.tolist())
        return index, saved.header


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
