"""Workspace membership, and the per-workspace indexes that make scoped vector search fast.

Why a second index for small workspaces
---------------------------------------
hnswlib 0.8 filters during the search and calls the Python filter for every
node it visits (about 1 us a call, whatever the callable: a builtin
``set.__contains__`` is no faster, the cost is pybind11's call and the
GIL), so a filtered search costs about ef/share calls: 1.3 ms for a
workspace holding 36% of a 100k store, 3 ms at 10%, 10 ms at 2.5%, 29 ms at
1% (index_search.py has the table). Search scoped to the current workspace
is the hot path (hook briefings, prompt recall), and most workspaces are a
small share of the store.

One index per workspace alone would make every search that spans
workspaces query them all and merge: measured on the 100k bench store (12
workspaces), 2.9 ms p50 against 0.45 ms for one global index, and growing
with the number of workspaces. So the global index stays, for unscoped
searches and for workspaces that are a large share of it (filtered in the
graph, cheap there), and each workspace below SHARE_MAX of the store gets
an index of its own, searched without a filter (0.1-0.5 ms at any share).
The price is memory: the small workspaces' vectors are held twice (at most
once more than the global index; on the bench stores all 12 workspaces), plus
a fixed ~2.7 MB per hnswlib index.

Scoped indexes are derived from the same changes as the global one, in the
same worker thread (indexer.py), and are saved and loaded with it under the
same change sequence: a scoped file whose sequence differs from the global
one's (a crash between two renames) is rebuilt, never trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import apsw
import numpy as np
import numpy.typing as npt
from reverie.store.index_file import CorruptIndex, remove_index, saved_names
from reverie.store.vector_index import HnswParams, Neighbours, VectorIndex

__all__ = ["SHARE_MAX", "Members", "ScopedIndexes", "scoped_name"]

log = logging.getLogger("reverie.store.scoped_index")
Floats = npt.NDArray[np.float32]

# A workspace below this share of the store gets an index of its own. Above
# it, the global index's in-graph filter visits under 2x the nodes of an
# unfiltered search. (At 0.2, a workspace with 36% of the bench store paid
# 1.3 ms p50 and 5.7 ms p99 for its filtered queries, against 0.3 ms.)
SHARE_MAX = 0.5
# Vectors read from SQLite and added per step while building one.
BUILD_BATCH = 2048
NAME_PREFIX = "ws-"


def scoped_name(workspace: str) -> str:
    """The file name of a workspace's index: a hash (workspace ids are paths and URLs)."""
    return NAME_PREFIX + hashlib.sha256(workspace.encode()).hexdigest()[:24]


class Members:
    """Which workspace each indexed id belongs to.

    A compact array of workspace codes indexed by memory id, so the per-label
    filter hnswlib calls is one array lookup.
    """

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self.of: np.ndarray = np.zeros(1024, dtype=np.int32)  # 0: not indexed
        self.sizes: dict[int, int] = {}

    def code(self, workspace: str) -> int:
        code = self.codes.setdefault(workspace, len(self.codes) + 1)
        self.names[code] = workspace
        return code

    def workspace_of(self, mid: int) -> str | None:
        code = int(self.of[mid]) if mid < len(self.of) else 0
        return self.names.get(code) if code else None

    def set(self, mid: int, workspace: str | None) -> None:
        if mid >= len(self.of):
            grown = np.zeros(max(mid + 1, 2 * len(self.of)), dtype=np.int32)
            grown[: len(self.of)] = self.of
            self.of = grown
        old = int(self.of[mid])
        new = 0 if workspace is None else self.code(workspace)
        if old:
            self.sizes[old] -= 1
        if new:
            self.sizes[new] = self.sizes.get(new, 0) + 1
        self.of[mid] = new

    def total(self) -> int:
        return sum(self.sizes.values())

    def share(self, workspace: str) -> float:
        code = self.codes.get(workspace)
        total = self.total()
        return self.sizes.get(code, 0) / total if code and total else 0.0

    def ids_of(self, workspace: str) -> npt.NDArray[np.int64]:
        code = self.codes.get(workspace)
        if code is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.of == code).astype(np.int64)

    def allowed(self, workspace: str) -> tuple[Callable[[int], bool], float] | None:
        code = self.codes.get(workspace)
        total = self.total()
        if code is None or not total:
            return None
        of = self.of
        return (lambda label: label < len(of) and of[label] == code), self.sizes[code] / total

    def small(self) -> list[str]:
        """Workspaces below SHARE_MAX of the store, smallest first (when there are several)."""
        total = self.total()
        if len(self.sizes) < 2 or not total:
            return []
        found = [(n, self.names[c]) for c, n in self.sizes.items() if n and n / total < SHARE_MAX]
        return [ws for _, ws in sorted(found)]


class ScopedIndexes:
    """The per-workspace indexes of one generation (one model)."""

    def __init__(self, dim: int, model_id: str, params: HnswParams) -> None:
        self.dim = dim
        self.model_id = model_id
        self.params = params
        # Replaced, never mutated in place, when an index is added: searches
        # in other threads read it without a lock.
        self.by_ws: dict[str, VectorIndex] = {}

    def get(self, workspace: str) -> VectorIndex | None:
        return self.by_ws.get(workspace)

    def vectors(self) -> int:
        return sum(ix.live_count for ix in self.by_ws.values())

    # -- following changes (the indexer's worker thread) ----------------------------

    def apply(
        self,
        added: list[tuple[int, str, Floats]],
        removed: list[tuple[int, str]],
    ) -> None:
        """Mirror changes already applied to the global index.

        `removed` names each id's previous workspace: an id whose workspace
        changed is removed from the old one's index and added to the new one's.
        """
        by_ws = self.by_ws
        if not by_ws:
            return
        gone: dict[str, list[int]] = {}
        for mid, ws in removed:
            if ws in by_ws:
                gone.setdefault(ws, []).append(mid)
        for ws, ids in gone.items():
            by_ws[ws].remove(np.array(ids, dtype=np.int64))
        fresh: dict[str, tuple[list[int], list[Floats]]] = {}
        for mid, ws, vec in added:
            if ws in by_ws:
                ids, vecs = fresh.setdefault(ws, ([], []))
                ids.append(mid)
                vecs.append(vec)
        for ws, (ids, vecs) in fresh.items():
            by_ws[ws].add(np.array(ids, dtype=np.int64), np.stack(vecs))

    def build(
        self,
        workspace: str,
        ids: npt.NDArray[np.int64],
        read: Callable[[list[int]], dict[int, Floats]],
        stopping: Callable[[], bool],
    ) -> bool:
        """Build `workspace`'s index from the vectors `read` returns; False if abandoned."""
        capacity = max(1024, len(ids) + len(ids) // 4)
        params = dataclasses.replace(self.params, capacity=capacity)
        index = VectorIndex(self.dim, model_id=self.model_id, params=params)
        for start in range(0, len(ids), BUILD_BATCH):
            if stopping():
                return False
            chunk = ids[start : start + BUILD_BATCH].tolist()
            found = read(chunk)
            missing = len(chunk) - len(found)
            if missing:
                log.warning(
                    "no stored vector for %d memories of %s: its index waits for a rebuild",
                    missing,
                    workspace,
                )
                return False
            index.add(np.array(chunk, dtype=np.int64), np.stack([found[i] for i in chunk]))
        self.by_ws = {**self.by_ws, workspace: index}
        return True

    # -- saving and loading -----------------------------------------------------------

    def save(self, directory: Path, seq: int) -> None:
        for ws, index in list(self.by_ws.items()):
            index.save(directory, seq=seq, name=scoped_name(ws))
        keep = {scoped_name(ws) for ws in self.by_ws}
        for name in saved_names(directory, NAME_PREFIX) - keep:
            remove_index(directory, name)

    def load(self, directory: Path, workspaces: list[str], seq: int) -> None:
        """Load the saved indexes of these workspaces that reflect exactly `seq`."""
        loaded: dict[str, VectorIndex] = {}
        for ws in workspaces:
            try:
                index, header = VectorIndex.load(
                    directory, self.model_id, self.dim, params=self.params, name=scoped_name(ws)
                )
            except CorruptIndex:
                continue  # missing or unusable: built again from SQLite
            if header.seq == seq:
                loaded[ws] = index
        self.by_ws = loaded

    def query(self, workspace: str, vector: Floats, k: int) -> Neighbours | None:
        index = self.by_ws.get(workspace)
        return None if index is None else index.query(vector, k)


def stored_vectors(
    conn: apsw.Connection,
    model: str,
    ids: list[int],
    unsaved: Mapping[int, tuple[str, Floats]],
) -> dict[int, Floats]:
    """The vectors the global index holds for these ids: unsaved ones first, then SQLite's.

    `unsaved` maps ids to (content hash, vector) for vectors not yet in SQLite.
    """
    out = {mid: unsaved[mid][1] for mid in ids if mid in unsaved}
    rest = [mid for mid in ids if mid not in out]
    for part in _chunks(rest, 500):
        marks = ",".join("?" * len(part))
        for mid, blob in conn.execute(
            f"SELECT memory_id, vector FROM embeddings WHERE model = ? AND memory_id IN ({marks})",
            (model, *part),
        ):
            out[int(mid)] = np.frombuffer(blob, dtype="<f4")
    return out


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
