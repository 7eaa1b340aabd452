"""Document embeddings from the embed worker process (store/embed_worker.py)."""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
from harness import Daemon, wait_indexed
from reverie.store.embed_lexical import LexicalEmbedder
from reverie.store.embed_worker import RemoteEmbedder

WORDS = "deploy pipeline wheel numpy trio nursery sqlite vector café 日本 naïve".split()


def texts(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    out = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(n)]
    return [*out, "", "   ", "x" * 20_000]  # empty, blank, one huge token


def test_the_worker_embeds_bit_for_bit_as_the_daemon_would() -> None:
    local = LexicalEmbedder(384)
    remote = RemoteEmbedder(local, 384)
    try:
        batch = texts(200)
        got = remote.embed(batch)
        assert remote.remote_batches == 1 and remote.pid is not None
        assert got.dtype == np.float32 and got.shape == (len(batch), 384)
        assert np.array_equal(got, local.embed(batch))
        assert remote.embed([]).shape == (0, 384)  # nothing to send
    finally:
        remote.close()


def test_a_dead_worker_falls_back_and_is_retried_later(monkeypatch: object) -> None:
    from reverie.store import embed_worker

    local = LexicalEmbedder(64)
    remote = RemoteEmbedder(local, 64)
    try:
        remote.embed(["first"])
        assert remote.pid is not None
        os.kill(remote.pid, signal.SIGKILL)
        batch = texts(10)
        assert np.array_equal(remote.embed(batch), local.embed(batch))  # in-process
        assert remote.failures == 1 and remote.pid is None
        before = remote.remote_batches
        remote.embed(batch)  # within RETRY_AFTER_S: still in-process, no new process
        assert remote.remote_batches == before and remote.pid is None
        monkeypatch.setattr(embed_worker, "RETRY_AFTER_S", 0.0)  # type: ignore[attr-defined]
        assert np.array_equal(remote.embed(batch), local.embed(batch))
        assert remote.remote_batches == before + 1 and remote.pid is not None
    finally:
        remote.close()


def test_a_worker_that_cannot_start_costs_nothing() -> None:
    local = LexicalEmbedder(64)
    remote = RemoteEmbedder(local, 64, command=[sys.executable, "-c", "import sys; sys.exit(1)"])
    try:
        batch = texts(5)
        assert np.array_equal(remote.embed(batch), local.embed(batch))
        assert remote.failures == 1 and remote.remote_batches == 0
    finally:
        remote.close()


def embed_workers(daemon_pid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == daemon_pid and b"embed_worker" in cmd:
                pids.append(int(entry))
    return pids


def test_the_daemon_indexes_through_it_and_finds_the_same(tmp_path: Path) -> None:
    found = {}
    for on in (True, False):
        root = tmp_path / str(on)
        root.mkdir()
        cfg = f"[index]\nembed_process = {str(on).lower()}\n[search]\nrecord_recalls = false\n"
        with Daemon(root, config=cfg) as d, d.client() as c:
            assert d.proc is not None
            for i, t in enumerate(texts(40)):
                c.remember(f"{t} note {i}", workspace="w")
            wait_indexed(c)
            assert bool(embed_workers(d.proc.pid)) == on
            res = c.search("pipeline numpy café", mode="vector", limit=10)
            found[on] = [(h.memory.id, h.score) for h in res.hits]
    assert found[True] == found[False] and found[True]
