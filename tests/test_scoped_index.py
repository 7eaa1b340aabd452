"""Per-workspace indexes for small workspaces: kept in step, saved, loaded, and used by search."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from harness import Daemon, wait_indexed
from reverie.rpc.client import Client
from reverie.store.scoped_index import Members, ScopedIndexes, scoped_name
from reverie.store.vector_index import HnswParams, VectorIndex

DIM = 16
PARAMS = HnswParams(m=8, ef_construction=32, ef=32, threads=1)


def vecs(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def members_of(layout: dict[str, range]) -> Members:
    m = Members()
    for ws, ids in layout.items():
        for i in ids:
            m.set(i, ws)
    return m


def test_only_workspaces_below_the_share_get_an_index() -> None:
    m = members_of({"big": range(1, 91), "mid": range(91, 101), "tiny": range(101, 103)})
    assert m.small() == ["tiny", "mid"]  # smallest first; big holds 88%
    assert members_of({"alone": range(1, 5)}).small() == []  # one workspace: global suffices
    m.set(1, None)
    assert m.total() == 101 and m.workspace_of(1) is None and m.workspace_of(95) == "mid"


def test_build_apply_and_query_agree_with_exact_search() -> None:
    v = vecs(300, 1)
    m = members_of({"big": range(1, 251), "small": range(251, 301)})
    scoped = ScopedIndexes(DIM, "test-model", PARAMS)
    stored = {i + 1: v[i] for i in range(300)}
    assert scoped.build("small", m.ids_of("small"), lambda ids: {i: stored[i] for i in ids}, bool)
    q = v[260]
    found = scoped.query("small", q, 5)
    assert found is not None and found.ids[0] == 261
    assert set(found.ids.tolist()) <= set(range(251, 301))
    assert scoped.query("big", q, 5) is None  # no index of its own: the caller filters

    # A memory leaves, another moves in from "big", a third is added.
    new = vecs(1, 9)[0]
    scoped.apply(
        added=[(10, "small", q), (400, "small", new)], removed=[(261, "small"), (10, "big")]
    )
    found = scoped.query("small", q, 60)
    assert found is not None
    ids = found.ids.tolist()
    assert 261 not in ids and 10 in ids and 400 in ids and ids[0] == 10
    assert len(ids) == 51


def test_a_build_without_every_vector_is_not_served() -> None:
    scoped = ScopedIndexes(DIM, "test-model", PARAMS)
    ids = np.arange(1, 11, dtype=np.int64)
    assert not scoped.build("ws", ids, lambda got: {}, bool)
    assert scoped.get("ws") is None


def test_save_and_load_only_at_the_same_sequence(tmp_path: Path) -> None:
    v = vecs(40, 2)
    scoped = ScopedIndexes(DIM, "test-model", PARAMS)
    for ws, base in (("a", 0), ("b", 20)):
        ids = np.arange(base + 1, base + 21, dtype=np.int64)
        assert scoped.build(ws, ids, lambda got: {i: v[i - 1] for i in got}, bool)
    scoped.save(tmp_path, seq=7)
    assert (tmp_path / f"{scoped_name('a')}.json").exists()

    again = ScopedIndexes(DIM, "test-model", PARAMS)
    again.load(tmp_path, ["a", "b", "c"], seq=7)
    assert set(again.by_ws) == {"a", "b"}
    a = again.query("a", v[3], 3)
    assert a is not None and a.ids[0] == 4

    stale = ScopedIndexes(DIM, "test-model", PARAMS)
    stale.load(tmp_path, ["a", "b"], seq=8)  # the global index moved on: rebuild these
    assert stale.by_ws == {}

    again.by_ws = {"a": again.by_ws["a"]}  # "b" grew past the share: its files go
    again.save(tmp_path, seq=9)
    assert not list(tmp_path.glob(f"{scoped_name('b')}*"))
    assert VectorIndex.load(tmp_path, "test-model", DIM, name=scoped_name("a"))[1].seq == 9


def wait_workspace_indexes(c: Client, built: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ix = c.status().index
        if ix is not None and ix.workspace_indexes >= built and not ix.workspace_indexes_pending:
            wait_indexed(c)
            return
        assert time.monotonic() < deadline, f"workspace indexes not built: {ix}"
        time.sleep(0.05)


def fill(c: Client) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {"big": [], "proj": []}
    for i in range(40):
        text = f"Routine note {i} about the billing service and its nightly reconciliation job"
        ids["big"].append(c.remember(text, workspace="big").id)
    for text in (
        "The deployment pipeline publishes wheels to the internal index",
        "We decided to pin numpy below 3 until hnswlib supports it",
        "Prefer trio nurseries over bare asyncio tasks",
    ):
        ids["proj"].append(c.remember(text, workspace="proj").id)
    return ids


def test_search_in_a_small_workspace_uses_its_own_index(short_tmp: Path) -> None:
    d = Daemon(short_tmp).start()
    with d.client() as c:
        ids = fill(c)
        wait_workspace_indexes(c, 1)
        assert c.status().index.workspace_indexes == 1  # type: ignore[union-attr]
        hits = c.search("pipelnie deploys wheels", mode="vector", workspace="proj").hits
        assert hits[0].memory.id == ids["proj"][0]
        assert {h.memory.workspace for h in hits} == {"proj"}

        # Writes reach it: a new memory is found, a forgotten one is gone.
        added = c.remember("Nightly wheels are signed before upload", workspace="proj").id
        c.forget(ids["proj"][0])
        wait_indexed(c)
        found = [h.memory.id for h in c.search("wheels", mode="vector", workspace="proj").hits]
        assert added in found and ids["proj"][0] not in found
        before = [h.memory.id for h in c.search("numpy pins", mode="vector", workspace="proj").hits]
    assert d.stop() == 0
    assert (d.data_dir / "index" / f"{scoped_name('proj')}.json").exists()

    mark = len(d.log())
    d.start()  # loaded with the global index, not rebuilt
    with d.client() as c:
        wait_indexed(c)
        assert c.status().index.workspace_indexes == 1  # type: ignore[union-attr]
        after = [h.memory.id for h in c.search("numpy pins", mode="vector", workspace="proj").hits]
        assert after == before
    assert "workspace indexes=1" in d.log()[mark:]
    assert "workspace index built" not in d.log()[mark:]
    assert d.stop() == 0
