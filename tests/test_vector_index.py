"""The HNSW vector index: search, updates, growth, filters, persistence, crash safety, threads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from reverie.errors import StorageError
from reverie.store.rwlock import RWLock
from reverie.store.vector_index import (
    CorruptIndex,
    HnswParams,
    VectorIndex,
    build_index,
)

DIM = 32
Matrix = npt.NDArray[np.float32]


def vectors(n: int, seed: int = 0, dim: int = DIM) -> Matrix:
    """Unit vectors in 20 clusters, like embeddings of related texts."""
    centres = np.random.default_rng(99).standard_normal((20, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    rows = centres[rng.integers(20, size=n)] + 0.5 * rng.standard_normal((n, dim))
    rows = rows.astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def exact(data: Matrix, ids: npt.NDArray[np.int64], q: Matrix, k: int) -> list[int]:
    sims = data @ (q / np.linalg.norm(q))
    return ids[np.argsort(-sims, kind="stable")[:k]].tolist()


def small_index(n: int = 1000, **params: int) -> tuple[VectorIndex, Matrix]:
    data = vectors(n)
    index = VectorIndex(DIM, model_id="test-model", params=HnswParams(**params))
    index.add(np.arange(n), data)
    return index, data


# -- adding, searching, deleting, updating -----------------------------------------------------


def test_query_finds_itself_and_agrees_with_brute_force() -> None:
    index, data = small_index(2000)
    assert (index.count, index.live_count) == (2000, 2000)
    hit = index.query(data[17], 5)
    assert hit.ids[0] == 17 and hit.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert hit.ids.dtype == np.int64 and hit.similarities.dtype == np.float32
    assert np.all(np.diff(hit.similarities) <= 0)
    queries = vectors(200, seed=5)
    ids = np.arange(2000, dtype=np.int64)
    recall = np.mean(
        [len(set(index.query(q, 10).ids.tolist()) & set(exact(data, ids, q, 10))) for q in queries]
    )
    assert recall / 10 >= 0.97
    # similarities are true cosine similarities
    q = queries[0] * 3.0  # queries need not be unit vectors
    found = index.query(q, 10)
    expected = data[found.ids] @ (q / np.linalg.norm(q))
    np.testing.assert_allclose(found.similarities, expected, atol=1e-5)


def test_remove_hides_vectors_and_ignores_unknown_ids() -> None:
    index, data = small_index(500)
    assert index.remove([3, 4, 4, 10_000]) == 2
    assert index.remove([3]) == 0
    assert not index.contains(3) and index.contains(5)
    assert (index.count, index.live_count) == (500, 498)
    for q in (data[3], data[4]):
        found = index.query(q, 50).ids.tolist()
        assert 3 not in found and 4 not in found
    assert sorted(index.ids().tolist()) == [i for i in range(500) if i not in (3, 4)]


def test_re_adding_an_id_updates_it_in_place() -> None:
    index, data = small_index(500)
    new = vectors(1, seed=42)[0]
    index.add([7], new[None, :])
    assert index.count == 500  # same slot
    top = index.query(new, 1)
    assert top.ids.tolist() == [7] and top.similarities[0] == pytest.approx(1.0, abs=1e-5)
    old = index.query(data[7], 3)
    assert 7 not in old.ids.tolist() or old.similarities[old.ids.tolist().index(7)] < 0.99


def test_re_adding_a_deleted_id_revives_it_with_the_new_vector() -> None:
    index, _ = small_index(500)
    index.remove([9])
    new = vectors(1, seed=43)[0]
    index.add([9], new[None, :])
    assert index.contains(9) and (index.count, index.live_count) == (500, 500)
    assert index.query(new, 1).ids.tolist() == [9]


def test_new_ids_reuse_deleted_slots() -> None:
    index, _ = small_index(400, capacity=400)
    index.remove(np.arange(0, 400, 2))
    fresh = vectors(200, seed=8)
    index.add(np.arange(1000, 1200), fresh)
    # every new vector took a deleted slot: nothing grew
    assert (index.count, index.live_count, index.capacity) == (400, 400, 400)
    for i in (0, 57, 199):
        assert index.query(fresh[i], 1).ids.tolist() == [1000 + i]
    found = set(np.concatenate([index.query(q, 20).ids for q in fresh[:50]]).tolist())
    assert not found & set(range(0, 400, 2))


def churn_misses(params: HnswParams, steps: int = 600) -> list[int]:
    """Add, update and delete (reusing slots) around 2000 stable vectors; list those lost."""
    stable = vectors(2000, seed=20)
    churn = vectors(steps * 10, seed=21)
    index = VectorIndex(DIM, model_id="m", params=params)
    index.add(np.arange(2000), stable)
    rng = np.random.default_rng(22)
    missed: set[int] = set()
    for step in range(steps):
        base = 10_000 + step * 10
        index.add(np.arange(base, base + 10), churn[step * 10 : step * 10 + 10])
        if step % 3 == 0:
            ids = rng.integers(max(10_000, base - 40), base + 10, size=5)
            index.add(ids, churn[rng.integers(0, len(churn), size=5)])
        if step >= 5:  # 8 of every 10 new ids are deleted 5 steps later
            index.remove(np.arange(base - 50, base - 42))
        if step % 50 == 49:
            found = index.query_many(stable, 1)
            missed.update(i for i, n in enumerate(found) if n.ids[0] != i)
    assert index.count < 2000 + steps * 10 * 0.4  # deleted slots were reused
    return sorted(missed)


def test_heavy_churn_keeps_every_vector_findable() -> None:
    # Reusing a deleted slot moves it across the graph, and hnswlib repairs the
    # links around it only within ef_construction candidates: M=32 with
    # ef_construction=64 lost stable vectors here. The defaults must not.
    assert churn_misses(HnswParams(threads=1)) == []


def test_last_vector_wins_within_one_batch() -> None:
    index = VectorIndex(DIM, model_id="m")
    rows = vectors(3, seed=4)
    index.add([5, 6, 5], rows)
    assert index.live_count == 2
    assert index.query(rows[2], 1).ids.tolist() == [5]
    assert index.query(rows[0], 2).ids.tolist() != [5]


def test_grows_past_its_initial_capacity() -> None:
    index = VectorIndex(DIM, model_id="m", params=HnswParams(capacity=16))
    data = vectors(1000, seed=2)
    capacities = set()
    for start in range(0, 1000, 7):
        index.add(np.arange(start, min(start + 7, 1000)), data[start : start + 7])
        capacities.add(index.capacity)
    assert index.live_count == 1000 and index.capacity >= 1000
    assert len(capacities) <= 8  # doubling, not one resize per batch
    hits = sum(index.query(data[i], 1).ids[0] == i for i in range(0, 1000, 10))
    assert hits >= 98
    big = vectors(5000, seed=3)  # one batch much larger than the capacity
    index.add(np.arange(10_000, 15_000), big)
    assert index.live_count == 6000


def test_bad_input_is_refused_before_touching_the_index() -> None:
    index, _ = small_index(50)
    with pytest.raises(ValueError):
        index.add([1, 2], vectors(3))
    with pytest.raises(ValueError):
        index.add([1], np.zeros((1, DIM + 1), np.float32))
    with pytest.raises(ValueError):
        index.add([-1], vectors(1))
    bad = vectors(1)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        index.add([1], bad)
    with pytest.raises(ValueError):
        index.query(np.zeros(DIM + 1), 3)
    assert index.live_count == 50


# -- k, empty index, filters -------------------------------------------------------------------


def test_k_larger_than_the_live_count_and_empty_index() -> None:
    index = VectorIndex(DIM, model_id="m")
    q = vectors(1, seed=1)[0]
    assert index.query(q, 10).ids.size == 0
    assert [n.ids.size for n in index.query_many(vectors(3), 5)] == [0, 0, 0]
    data = vectors(5)
    index.add(np.arange(5), data)
    index.remove([0])
    found = index.query(q, 10)
    assert sorted(found.ids.tolist()) == [1, 2, 3, 4]
    assert index.query(q, 0).ids.size == 0
    index.remove([1, 2, 3, 4])
    assert index.query(q, 10).ids.size == 0


def test_filter_keeps_only_allowed_ids_and_finds_the_best_of_them() -> None:
    index, data = small_index(2000)
    ids = np.arange(2000, dtype=np.int64)
    even = ids[ids % 2 == 0]
    for q in vectors(30, seed=6):
        found = index.query(q, 10, allowed=lambda i: i % 2 == 0).ids.tolist()
        assert all(i % 2 == 0 for i in found) and len(found) == 10
        assert len(set(found) & set(exact(data[even], even, q, 10))) >= 9


def test_filter_with_fewer_matches_than_k_returns_them_all_ranked() -> None:
    index, data = small_index(2000)
    allowed = {5, 600, 1999}
    q = vectors(1, seed=11)[0]
    found = index.query(q, 10, allowed=allowed.__contains__)
    ids = np.array(sorted(allowed), dtype=np.int64)
    assert found.ids.tolist() == exact(data[ids], ids, q, 10)
    np.testing.assert_allclose(
        found.similarities, data[found.ids] @ (q / np.linalg.norm(q)), atol=1e-5
    )
    assert index.query(q, 10, allowed=lambda i: False).ids.size == 0
    many = index.query_many(np.stack([q, data[600]]), 10, allowed=allowed.__contains__)
    assert [sorted(n.ids.tolist()) for n in many] == [sorted(allowed)] * 2
    assert many[1].ids[0] == 600


def test_share_hint_changes_the_strategy_not_the_answers() -> None:
    index, data = small_index(2000)
    ids = np.arange(2000, dtype=np.int64)
    even = ids[ids % 2 == 0]
    for q in vectors(20, seed=7):
        hinted = index.query(q, 10, allowed=lambda i: i % 2 == 0, share=0.5).ids.tolist()
        assert all(i % 2 == 0 for i in hinted) and len(hinted) == 10
        assert len(set(hinted) & set(exact(data[even], even, q, 10))) >= 9
    # An optimistic hint falls back to filtering inside the graph.
    few = {5, 600, 1999}
    found = index.query(data[600], 10, allowed=few.__contains__, share=0.5)
    assert sorted(found.ids.tolist()) == sorted(few) and found.ids[0] == 600


def test_an_error_in_the_filter_reaches_the_caller_and_leaves_the_index_usable() -> None:
    index, data = small_index(300)

    def broken(label: int) -> bool:
        raise KeyError(label)

    with pytest.raises(KeyError):
        index.query(data[0], 5, allowed=broken)
    with pytest.raises(KeyError):
        index.query_many(data[:3], 5, allowed=broken)
    assert index.query(data[0], 1).ids.tolist() == [0]


def test_query_many_matches_single_queries() -> None:
    index, _ = small_index(1000)
    qs = vectors(20, seed=9)
    many = index.query_many(qs, 7)
    for q, n in zip(qs, many, strict=True):
        one = index.query(q, 7)
        assert n.ids.tolist() == one.ids.tolist()
        np.testing.assert_allclose(n.similarities, one.similarities, atol=1e-6)


def test_ef_is_configurable_and_searches_use_at_least_k() -> None:
    index, data = small_index(2000, ef=10)
    assert index.ef == 10
    found = index.query(data[0], 100)  # k > ef: hnswlib searches with max(ef, k)
    assert len(found.ids) == 100 and len(set(found.ids.tolist())) == 100
    index.set_ef(200)
    assert index.ef == 200


# -- saving and loading ------------------------------------------------------------------------


def saved(tmp_path: Path, n: int = 1500, seq: int = 7) -> tuple[VectorIndex, Matrix]:
    index, data = small_index(n)
    index.remove(np.arange(0, n, 10))
    index.save(tmp_path, seq=seq)
    return index, data


def test_save_and_load_give_the_same_results(tmp_path: Path) -> None:
    index, _ = saved(tmp_path)
    loaded, header = VectorIndex.load(tmp_path, "test-model", DIM)
    assert (header.seq, header.count, header.model_id, header.dim) == (7, 1350, "test-model", DIM)
    assert (loaded.count, loaded.live_count) == (index.count, index.live_count)
    defaults = HnswParams()
    assert (loaded.ef, loaded.m, loaded.ef_construction) == (
        defaults.ef,
        defaults.m,
        defaults.ef_construction,
    )
    assert loaded.ids().tolist() == index.ids().tolist()
    for q in vectors(50, seed=12):
        a, b = index.query(q, 10), loaded.query(q, 10)
        assert a.ids.tolist() == b.ids.tolist()
        np.testing.assert_array_equal(a.similarities, b.similarities)
    # deleted slots are still reusable and deleted ids revivable after a load
    loaded.add([5000, 10], vectors(2, seed=13))
    assert (loaded.count, loaded.live_count) == (1500, 1352)
    assert sorted(p.name for p in tmp_path.iterdir())[-1] == "vectors.json"
    assert len(list(tmp_path.iterdir())) == 3


def test_ef_is_set_after_every_load(tmp_path: Path) -> None:
    saved(tmp_path)
    loaded, _ = VectorIndex.load(tmp_path, "test-model", DIM, params=HnswParams(ef=150))
    assert loaded.ef == 150


def test_saving_again_replaces_the_old_files(tmp_path: Path) -> None:
    index, _ = saved(tmp_path, seq=7)
    first = json.loads((tmp_path / "vectors.json").read_text())
    index.add([9000], vectors(1, seed=14))
    index.save(tmp_path, seq=7)  # same sequence twice: still a fresh pair of files
    index.save(tmp_path, seq=8)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and first["data"]["name"] not in names
    loaded, header = VectorIndex.load(tmp_path, "test-model", DIM)
    assert header.seq == 8 and loaded.contains(9000)


def test_leftovers_of_an_interrupted_save_are_ignored_then_removed(tmp_path: Path) -> None:
    index, _ = saved(tmp_path, seq=7)
    # What a crash between the data files and the header commit leaves behind:
    # complete data files of a newer save, and temporaries, without a header.
    other = tmp_path / "other"
    index.add([7777], vectors(1, seed=15))
    index.save(other, seq=8)
    for p in other.glob("vectors.8.*"):
        os.replace(p, tmp_path / p.name)
    (tmp_path / ".vectors.9.0badcafe.bin.1234abcd.tmp").write_bytes(b"\0" * 100)
    (tmp_path / ".vectors.json.1234abcd.tmp").write_bytes(b'{"magic": "rev')
    (tmp_path / "unrelated.bin").write_bytes(b"keep me")
    loaded, header = VectorIndex.load(tmp_path, "test-model", DIM)
    assert header.seq == 7 and not loaded.contains(7777)
    loaded.save(tmp_path, seq=9)
    names = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert len(names) == 4 and "unrelated.bin" in names
    assert not any(n.startswith((".", "vectors.8.", "vectors.7.")) for n in names)


def corrupt_reason(tmp_path: Path, model: str = "test-model", dim: int = DIM) -> str:
    with pytest.raises(CorruptIndex) as info:
        VectorIndex.load(tmp_path, model, dim)
    assert isinstance(info.value, StorageError) and info.value.code == "corrupt_index"
    assert info.value.data is not None and info.value.data["reason"] == info.value.reason
    return info.value.reason


def data_file(tmp_path: Path, suffix: str = ".bin") -> Path:
    return (
        tmp_path
        / json.loads((tmp_path / "vectors.json").read_text())[
            "data" if suffix == ".bin" else "ids"
        ]["name"]
    )


def test_missing_index_is_reported_as_missing(tmp_path: Path) -> None:
    assert corrupt_reason(tmp_path) == "missing"
    assert corrupt_reason(tmp_path / "does-not-exist") == "missing"


def test_corrupt_index_survives_the_wire() -> None:
    # The client rebuilds errors as cls(message, data=data) (errors.error_for_code).
    sent = CorruptIndex("built by another model", path=Path("/x/vectors.json"), reason="mismatch")
    assert sent.data is not None
    again = CorruptIndex(sent.message, data=sent.data)
    assert (again.reason, again.data, again.code) == ("mismatch", sent.data, "corrupt_index")


def test_truncated_or_missing_data_file_is_detected(tmp_path: Path) -> None:
    saved(tmp_path)
    path = data_file(tmp_path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size - 4096)
    assert corrupt_reason(tmp_path) == "corrupt"
    path.unlink()
    assert corrupt_reason(tmp_path) == "corrupt"


def test_flipped_bytes_are_detected(tmp_path: Path) -> None:
    saved(tmp_path)
    for suffix in (".bin", ".ids"):
        path = data_file(tmp_path, suffix)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        original = path.read_bytes()
        path.write_bytes(bytes(raw))
        assert corrupt_reason(tmp_path) == "corrupt"
        path.write_bytes(original)
    VectorIndex.load(tmp_path, "test-model", DIM)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{not json",
        '{"magic": "reverie-hnsw"}',
        "[1, 2, 3]",
        "\x00" * 64,
    ],
)
def test_garbled_header_is_detected(tmp_path: Path, text: str) -> None:
    saved(tmp_path)
    (tmp_path / "vectors.json").write_text(text)
    assert corrupt_reason(tmp_path) == "corrupt"


def edit_header(tmp_path: Path, **changes: object) -> None:
    path = tmp_path / "vectors.json"
    header = json.loads(path.read_text())
    for key, value in changes.items():
        if key in ("data_name", "ids_name"):
            header[key.split("_")[0]]["name"] = value
        else:
            header[key] = value
    path.write_text(json.dumps(header))


def test_header_lies_are_detected(tmp_path: Path) -> None:
    saved(tmp_path)
    edit_header(tmp_path, magic="something-else")
    assert corrupt_reason(tmp_path) == "corrupt"
    saved(tmp_path)
    edit_header(tmp_path, data_name="../../etc/passwd")
    assert corrupt_reason(tmp_path) == "corrupt"
    saved(tmp_path)
    edit_header(tmp_path, count=3)
    assert corrupt_reason(tmp_path) == "corrupt"
    saved(tmp_path)
    edit_header(tmp_path, format=99)
    assert corrupt_reason(tmp_path) == "unsupported"


def test_another_model_or_dimension_is_refused(tmp_path: Path) -> None:
    saved(tmp_path)
    assert corrupt_reason(tmp_path, model="another-model") == "mismatch"
    assert corrupt_reason(tmp_path, dim=DIM * 2) == "mismatch"
    edit_header(tmp_path, dim=DIM * 2)  # the header must agree with the data too
    assert corrupt_reason(tmp_path, dim=DIM * 2) == "corrupt"


def test_save_into_an_impossible_place_raises_storage_error(tmp_path: Path) -> None:
    index, _ = small_index(10)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError):
        index.save(tmp_path / "file" / "index", seq=1)
    with pytest.raises(ValueError):
        index.save(tmp_path, seq=1, name="../escape")


CRASH_CHILD = """
import sys, numpy as np
from pathlib import Path
from reverie.store.vector_index import VectorIndex, HnswParams
directory, n = Path(sys.argv[1]), int(sys.argv[2])
rows = np.random.default_rng(0).standard_normal((n + 10_000, 16)).astype(np.float32)
index = VectorIndex(16, model_id="crash", params=HnswParams(ef_construction=20, threads=1))
index.add(np.arange(n), rows[:n])
index.save(directory, seq=0)
print("ready", flush=True)
seq = 0
while True:  # every save at sequence s holds exactly n + s vectors
    seq += 1
    index.add([n + seq - 1], rows[n + seq - 1 : n + seq])
    index.save(directory, seq=seq)
"""


def test_a_save_killed_at_any_moment_leaves_a_loadable_index(tmp_path: Path) -> None:
    n = 5_000
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASH_CHILD, str(tmp_path), str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
            # Let it save a few times, then kill it wherever it is.
            time.sleep(float(rng.uniform(0.05, 0.6)))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        index, header = VectorIndex.load(tmp_path, "crash", 16)
        assert index.live_count == header.count == n + header.seq
        assert index.contains(n + header.seq - 1) and not index.contains(n + header.seq)
        seen.add(header.seq)
    assert len(seen) > 1, "the kills all landed before the first save in the loop"


# -- threads -----------------------------------------------------------------------------------


def test_rwlock_shares_reads_and_excludes_writes() -> None:
    lock = RWLock()
    inside = threading.Barrier(3, timeout=5)

    def reader() -> None:
        with lock.read():
            inside.wait()  # all three readers are inside at once

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    reader()
    for t in threads:
        t.join(5)

    entered = threading.Event()

    def late_reader() -> None:
        with lock.read():
            entered.set()

    with lock.write():
        t = threading.Thread(target=late_reader)
        t.start()
        assert not entered.wait(0.2)  # a reader cannot enter while the writer holds the lock
    assert entered.wait(5)
    t.join(5)


def test_rwlock_waiting_writer_holds_off_new_readers() -> None:
    lock = RWLock()
    order: list[str] = []
    writer_waiting = threading.Event()
    with lock.read():

        def writer() -> None:
            writer_waiting.set()
            with lock.write():
                order.append("writer")

        def reader() -> None:
            with lock.read():
                order.append("reader")

        w = threading.Thread(target=writer)
        w.start()
        assert writer_waiting.wait(5)
        deadline = time.monotonic() + 5
        while lock.writers_waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.001)  # polling for a state, not timing anything
        r = threading.Thread(target=reader)
        r.start()
        r.join(0.1)
        assert r.is_alive()  # held off behind the waiting writer
    w.join(5)
    r.join(5)
    assert order == ["writer", "reader"]


def test_rwlock_waiting_readers_go_before_the_next_write() -> None:
    # The indexer takes the write lock once per chunk of a catch-up batch, back
    # to back: the searches waiting meanwhile must get in between two holds.
    lock = RWLock()
    order: list[str] = []

    def reader() -> None:
        with lock.read():
            order.append("reader")

    with lock.write():
        r = threading.Thread(target=reader)
        r.start()
        deadline = time.monotonic() + 5
        while lock.readers_waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.001)  # polling for a state, not timing anything
    with lock.write():  # at once, before the reader thread has run
        order.append("writer")
    r.join(5)
    assert order == ["reader", "writer"]


class Watched:
    """Forwards to the real hnswlib index and counts calls that overlap a write."""

    WRITES = frozenset({"add_items", "mark_deleted", "unmark_deleted", "resize_index", "set_ef"})

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.mu = threading.Lock()
        self.reading = 0
        self.writing = 0
        self.overlaps = 0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr
        write = name in self.WRITES

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.mu:
                self.calls += 1
                if self.writing or (write and self.reading):
                    self.overlaps += 1
                if write:
                    self.writing += 1
                else:
                    self.reading += 1
            try:
                return attr(*args, **kwargs)
            finally:
                with self.mu:
                    if write:
                        self.writing -= 1
                    else:
                        self.reading -= 1

        return call


def test_queries_stay_sane_while_another_thread_writes() -> None:
    """Hammer the index: 3 searching threads against a thread adding, updating and deleting."""
    stable = vectors(2000, seed=20)
    churn = vectors(3000, seed=21)
    index = VectorIndex(DIM, model_id="m", params=HnswParams(capacity=64, threads=2))
    index.add(np.arange(2000), stable)
    watched = Watched(index._index)
    index._index = watched  # count any call into hnswlib that overlaps a write
    removed: set[int] = set()  # churn ids deleted for good
    errors: list[BaseException] = []
    done = threading.Event()
    checked = [0]

    def writer() -> None:
        try:
            rng = np.random.default_rng(22)
            for step in range(300):
                base = 10_000 + step * 10
                index.add(np.arange(base, base + 10), churn[step * 10 : step * 10 + 10])
                if step % 3 == 0:  # update recent ids (none of them deleted yet)
                    ids = rng.integers(max(10_000, base - 40), base + 10, size=5)
                    index.add(ids, churn[rng.integers(0, 3000, size=5)])
                if step >= 5 and step % 2 == 0:  # delete for good (never re-added)
                    gone = list(range(base - 50, base - 45))
                    index.remove(gone)
                    removed.update(gone)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set():
                before = set(removed)
                i = int(rng.integers(2000))
                if rng.random() < 0.3:
                    found = index.query(stable[i], 10, allowed=lambda x: x < 2000 or x % 2 == 0)
                else:
                    found = index.query(stable[i], 10)
                got = found.ids.tolist()
                assert got[0] == i and found.similarities[0] > 0.999  # stable ids stay findable
                assert len(set(got)) == len(got) == 10
                assert np.all(np.diff(found.similarities) <= 1e-6)
                assert not set(got) & before, "a deleted id came back"
                checked[0] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert not errors, errors[0]
    assert checked[0] > 100
    assert watched.overlaps == 0, f"{watched.overlaps} of {watched.calls} calls overlapped a write"
    assert index.live_count == 2000 + 3000 - len(removed)
    assert index.capacity >= index.count


def test_saves_run_alongside_writes_and_searches(tmp_path: Path) -> None:
    data = vectors(6000, seed=40)
    index = VectorIndex(DIM, model_id="m")
    index.add(np.arange(1000), data[:1000])
    errors: list[BaseException] = []
    done = threading.Event()

    def run(fn: Callable[[], None]) -> threading.Thread:
        def body() -> None:
            try:
                fn()
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=body)
        t.start()
        return t

    def write() -> None:
        try:
            for s in range(1000, 6000, 250):
                index.add(np.arange(s, s + 250), data[s : s + 250])
        finally:
            done.set()

    def save() -> None:
        seq = 0
        while not done.is_set() or seq < 3:
            seq += 1
            index.save(tmp_path, seq=seq)

    def search() -> None:
        while not done.is_set():
            assert index.query(data[7], 1).ids.tolist() == [7]

    threads = [run(write), run(save), run(search)]
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors[0]
    loaded, header = VectorIndex.load(tmp_path, "m", DIM)
    # each save is a consistent snapshot: its ids and its graph agree
    assert loaded.live_count == header.count and header.count % 250 == 0
    assert loaded.query(data[header.count - 1], 1).ids.tolist() == [header.count - 1]


# -- rebuilding --------------------------------------------------------------------------------


def test_build_from_batches_reports_progress() -> None:
    data = vectors(2500, seed=30)
    calls: list[tuple[int, int]] = []

    def batches() -> Iterator[tuple[npt.NDArray[np.int64], Matrix]]:
        for s in range(0, 2500, 1000):
            yield np.arange(s, min(s + 1000, 2500)), data[s : s + 1000]

    index = build_index(
        batches(), dim=DIM, model_id="m", total=2500, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(0, 2500), (1000, 2500), (2000, 2500), (2500, 2500)]
    assert index.live_count == 2500 and index.capacity == 2500
    assert index.query(data[1234], 1).ids.tolist() == [1234]


def test_a_progress_callback_can_abandon_a_build() -> None:
    data = vectors(3000, seed=31)

    class Stop(Exception):
        pass

    def progress(done: int, total: int) -> None:
        if done >= 1000:
            raise Stop

    with pytest.raises(Stop):
        build_index(
            [(np.arange(s, s + 1000), data[s : s + 1000]) for s in range(0, 3000, 1000)],
            dim=DIM,
            model_id="m",
            total=3000,
            progress=progress,
        )


# -- saving from a forked child (index_file.start_write) ----------------------------------------


@pytest.fixture
def fork_always(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fork for any size of index; records the pid of each writer child."""
    from reverie.store import index_file, vector_index

    monkeypatch.setattr(vector_index, "FORK_MIN_BYTES", 0)
    monkeypatch.setattr(index_file, "_fork_failed", False)
    pids: list[int] = []
    real = index_file.start_write

    def spy(index: Any, path: Path, size: int) -> Any:
        writer = real(index, path, size)
        if writer is not None:
            pids.append(writer.pid)
        return writer

    monkeypatch.setattr(vector_index, "start_write", spy)
    return pids


def test_a_forked_save_writes_what_an_in_process_save_writes(
    tmp_path: Path, fork_always: list[int]
) -> None:
    index, _ = small_index(1500)
    index.remove(np.arange(0, 1500, 10))
    forked, local = tmp_path / "forked", tmp_path / "local"
    index.save(forked, seq=3)
    assert len(fork_always) == 1 and fork_always[0] != os.getpid()
    index._params = HnswParams(fork_save=False)
    index.save(local, seq=3)
    assert len(fork_always) == 1  # fork_save=False writes in process
    a = json.loads((forked / "vectors.json").read_text())
    b = json.loads((local / "vectors.json").read_text())
    assert a["data"]["size"] == b["data"]["size"] and a["data"]["crc32"] == b["data"]["crc32"]
    assert a["ids"]["crc32"] == b["ids"]["crc32"]
    one, _ = VectorIndex.load(forked, "test-model", DIM)
    two, _ = VectorIndex.load(local, "test-model", DIM)
    assert one.ids().tolist() == two.ids().tolist() == index.ids().tolist()
    for q in vectors(30, seed=5):
        assert one.query(q, 10).ids.tolist() == two.query(q, 10).ids.tolist()


def test_a_refused_fork_falls_back_to_an_in_process_save_and_says_so_once(
    tmp_path: Path, fork_always: list[int], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    import errno

    def refuse() -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    index, _ = small_index(500)
    with caplog.at_level("WARNING", logger="reverie.store.index_file"):
        index.save(tmp_path, seq=1)
        index.save(tmp_path, seq=2)
    warned = [r for r in caplog.records if "cannot fork" in r.getMessage()]
    assert len(warned) == 1 and fork_always == []
    loaded, header = VectorIndex.load(tmp_path, "test-model", DIM)
    assert header.seq == 2 and loaded.ids().tolist() == index.ids().tolist()


@pytest.mark.parametrize("death", ["exit", "signal"])
def test_a_writer_child_that_fails_leaves_the_previous_save(
    tmp_path: Path, fork_always: list[int], monkeypatch: pytest.MonkeyPatch, death: str
) -> None:
    from reverie.store import index_file

    index, _ = small_index(500)
    index.save(tmp_path, seq=1)
    before = sorted(p.name for p in tmp_path.iterdir())

    def dying_child(hnsw: Any, path: str) -> None:  # runs in the forked child only
        if death == "signal":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)

    monkeypatch.setattr(index_file, "_child", dying_child)
    index.add([9000], vectors(1, seed=3))
    with pytest.raises(StorageError, match="failed"):
        index.save(tmp_path, seq=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no orphan left behind
    loaded, header = VectorIndex.load(tmp_path, "test-model", DIM)
    assert header.seq == 1 and not loaded.contains(9000)
    monkeypatch.undo()
    index.save(tmp_path, seq=2)  # the next save works
    assert VectorIndex.load(tmp_path, "test-model", DIM)[1].seq == 2
