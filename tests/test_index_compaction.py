"""Deep sleep compacts the HNSW index: a graph mostly of deleted slots is rebuilt.

hnswlib only marks a forgotten (or archived, superseded) memory's vector
deleted; searches still walk those nodes. After a completed deep-sleep run
the daemon asks the indexer to compact, and it rebuilds the graph from the
stored vectors when a quarter or more of its slots are deleted.
"""

from __future__ import annotations

import time

from harness import Daemon, wait_indexed
from reverie.rpc.client import Client
from reverie.rpc.proto_dreams import DreamsRun, DreamsRunResult

N, KEEP = 120, 30


def _deep_sleep(c: Client) -> None:
    res = c.call(DreamsRun(phase="deep-sleep"))
    assert isinstance(res, DreamsRunResult) and res.report is not None
    assert res.report.status == "completed", res.report


def _wait_slots(c: Client, want: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ix = c.status().index
        if ix is not None and ix.phase == "ready" and ix.slots == want and ix.pending == 0:
            return
        assert time.monotonic() < deadline, f"the index still has {ix}"
        time.sleep(0.05)


def test_deep_sleep_rebuilds_a_graph_of_mostly_deleted_slots(daemon: Daemon) -> None:
    with daemon.client(timeout=60) as c:
        ids = [c.remember(f"note {i}: the widget colour is shade {i * 7}").id for i in range(N)]
        wait_indexed(c)
        for mid in ids[KEEP:]:
            c.forget(mid)
        wait_indexed(c)
        ix = c.status().index
        assert ix is not None and ix.vectors == KEEP and ix.slots == N  # only marked

        _deep_sleep(c)
        _wait_slots(c, KEEP)  # rebuilt: no deleted slots left
        assert "index_compaction" in daemon.log()
        hits = c.search("widget colour shade 14", mode="vector").hits
        assert ids[2] in [h.memory.id for h in hits]

        # Nothing deleted now: a second run leaves the graph alone.
        _deep_sleep(c)
        wait_indexed(c)
        ix = c.status().index
        assert ix is not None and ix.slots == KEEP
        assert daemon.log().count("index_compaction") == 1
