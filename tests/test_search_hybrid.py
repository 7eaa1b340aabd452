"""Hybrid search through the real daemon: vectors, fusion, filters, recalls, the index's life."""

from __future__ import annotations

import datetime as dt
import signal
import time
from pathlib import Path

import pytest
from harness import Daemon, wait_indexed
from reverie.rpc.client import Client

DAY = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
NOTES = [
    ("The deployment pipeline publishes wheels to the internal index", "fact", ["ci"]),
    ("We decided to pin numpy below 3 until hnswlib supports it", "decision", ["deps"]),
    ("Prefer trio nurseries over bare asyncio tasks", "preference", ["style"]),
    ("Flaky test: test_durability times out on loaded machines", "observation", ["tests"]),
    ("Run migrations with reverie's user_version scheme", "procedure", ["db"]),
]


def fill(c: Client) -> list[int]:
    ids = []
    for i, (text, kind, tags) in enumerate(NOTES):
        ids.append(
            c.remember(
                text,
                kind=kind,
                tags=tags,
                workspace="proj",
                observed_at=DAY + dt.timedelta(days=10 * i),
            ).id
        )
    c.remember("Other project: the pipeline uses GitLab", workspace="other")
    wait_indexed(c)
    return ids


def test_vector_search_finds_what_words_miss(daemon: Daemon) -> None:
    with daemon.client() as c:
        ids = fill(c)
        # A typo and another word form: no indexed term matches "pipelnie".
        lexical = c.search("pipelnie deploys", mode="lexical", workspace="proj")
        assert ids[0] not in [h.memory.id for h in lexical.hits]
        vector = c.search("pipelnie deploys", mode="vector", workspace="proj", explain=True)
        assert vector.mode == "vector" and vector.hits[0].memory.id == ids[0]
        ex = vector.hits[0].explain
        assert ex is not None and ex.vector_rank == 1 and ex.vector_score and ex.vector_score > 0
        hybrid = c.search("pipelnie deploys", workspace="proj", explain=True)
        assert hybrid.mode == "hybrid" and hybrid.hits[0].memory.id == ids[0]


def test_explain_shows_each_component(daemon: Daemon) -> None:
    with daemon.client() as c:
        ids = fill(c)
        hit = c.search("pin numpy hnswlib", workspace="proj", explain=True).hits[0]
        assert hit.memory.id == ids[1]
        ex = hit.explain
        assert ex is not None
        assert ex.lexical_rank == 1 and ex.vector_rank == 1 and ex.fused > 0
        assert c.search("pin numpy", workspace="proj").hits[0].explain is None


def test_filters(daemon: Daemon) -> None:
    with daemon.client() as c:
        ids = fill(c)
        q = "pipeline numpy trio test migrations"

        def found(**f: object) -> set[int]:
            return {h.memory.id for h in c.search(q, workspace="proj", limit=50, **f).hits}

        assert found(kinds=["decision"]) == {ids[1]}
        assert found(kinds=["fact", "procedure"]) == {ids[0], ids[4]}
        assert found(tags=["style"]) == {ids[2]}
        assert found(tags=["style", "ci"]) == set()
        since = DAY + dt.timedelta(days=15)
        until = DAY + dt.timedelta(days=35)
        assert found(since=since, until=until) == {ids[2], ids[3]}
        every = {h.memory.id for h in c.search(q, limit=50).hits}
        assert every - set(ids), "without a workspace, the other project is searched too"


def test_boosts_reorder(daemon: Daemon) -> None:
    with daemon.client() as c:
        old = c.remember("cache invalidation rules for redis", importance=0.1).id
        new = c.remember("cache invalidation rules for redis keys", importance=1.0).id
        wait_indexed(c)
        boosted = c.search("cache invalidation redis", importance_boost=5.0, explain=True).hits
        assert boosted[0].memory.id == new and boosted[0].explain is not None
        assert boosted[0].explain.boost == pytest.approx(6.0)
        assert old in [h.memory.id for h in boosted]


def test_recalls_are_recorded(daemon: Daemon) -> None:
    with daemon.client() as c:
        ids = fill(c)
        for q in ("pin numpy", "Pin  NUMPY", "numpy pinning decision"):
            c.search(q, workspace="proj", kinds=["decision"])
        deadline = time.monotonic() + 10
        while (m := c.get(ids[1])).recall_count < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert m.distinct_queries == 2  # case and spacing do not make a new query
        assert m.last_recalled_at is not None


def test_search_works_before_the_index_is_ready(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config="[index]\nenabled = false\n").start()
    with d.client() as c:
        mid = c.remember("lexical only store").id
        found = c.search("lexical store")
        assert found.mode == "lexical" and found.hits[0].memory.id == mid
        assert found.notes and c.status().index is None
    assert d.stop() == 0


def test_index_is_saved_loaded_and_rebuilt(short_tmp: Path) -> None:
    d = Daemon(short_tmp).start()
    with d.client() as c:
        ids = fill(c)
        before = [h.memory.id for h in c.search("pipelnie", mode="vector", limit=3).hits]
    assert d.stop() == 0
    headers = list((d.data_dir / "index").glob("*.json"))
    assert headers, "the index is saved at shutdown"

    mark = len(d.log())
    d.start()  # loads the saved index: no rebuild
    with d.client() as c:
        wait_indexed(c)
        assert c.status().index.vectors == len(ids) + 1  # type: ignore[union-attr]
        assert [h.memory.id for h in c.search("pipelnie", mode="vector", limit=3).hits] == before
    assert "vector index loaded" in d.log()[mark:]
    assert "rebuilding" not in d.log()[mark:]
    assert d.stop() == 0

    for data in (d.data_dir / "index").glob("*.bin"):
        data.write_bytes(b"\0" * 100)  # corrupt the graph
    mark = len(d.log())
    d.start()
    with d.client() as c:
        wait_indexed(c)
        assert [h.memory.id for h in c.search("pipelnie", mode="vector", limit=3).hits] == before
    assert "rebuilding from SQLite" in d.log()[mark:]
    assert d.stop() == 0


def test_forgotten_memories_leave_the_vector_index(daemon: Daemon) -> None:
    with daemon.client() as c:
        ids = fill(c)
        c.forget(ids[0])
        wait_indexed(c)
        hits = c.search("deployment pipeline wheels", mode="vector", limit=50).hits
        assert ids[0] not in [h.memory.id for h in hits]


def test_model_change_on_reload_keeps_serving_the_old_index(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config="[embedder]\nname = 'lexical'\ndim = 256\n").start()
    with d.client() as c:
        fill(c)
        assert c.status().index.model == "lexical-v1-d256"  # type: ignore[union-attr]
        assert d.config_path is not None
        d.config_path.write_text("[embedder]\nname = 'lexical'\ndim = 512\n")
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while True:
            # Vector search answers throughout the switch, from one model or the other.
            assert c.search("pipelnie", mode="vector").mode == "vector"
            ix = c.status().index
            if ix is not None and ix.model == "lexical-v1-d512" and ix.phase == "ready":
                break
            assert time.monotonic() < deadline, ix
            time.sleep(0.02)
    assert d.stop() == 0
    # Restarting with yet another model serves the saved d512 index meanwhile.
    assert d.config_path is not None
    d.config_path.write_text("[embedder]\nname = 'lexical'\ndim = 384\n")
    mark = len(d.log())
    d.start()
    with d.client() as c:
        wait_indexed(c)
        assert c.status().index.model == "lexical-v1-d384"  # type: ignore[union-attr]
    assert "while lexical-v1-d384 re-embeds" in d.log()[mark:]
    assert d.stop() == 0
