"""Search worker processes (daemon/search_workers.py): same answers, and a lost worker
costs no answer."""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon, wait_indexed, wait_until
from reverie.daemon.search_workers import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    STABLE_S,
    WAIT_IDLE_S,
    next_backoff,
)
from reverie.rpc.client import Client
from reverie.rpc.proto_config import ConfigShow, ConfigShowResult
from reverie.rpc.proto_metrics import Metrics

WORDS = (
    "deploy pipeline wheel index numpy hnswlib trio nursery asyncio durability test flaky "
    "migration schema sqlite vector search lexical fusion cache socket daemon config reload "
    "backup restore hook session claim episode dream sleep cluster summary digest"
).split()
DAY = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def config(workers: int) -> str:
    # Recalls off: a search must not change what the next one finds (the two
    # daemons compared below answer the same queries).
    return f"[search]\nworkers = {workers}\nrecord_recalls = false\n"


def fill(c: Client, n: int = 240) -> None:
    rng = random.Random(7)
    for i in range(n):
        c.remember(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))) + f" note {i}",
            workspace=("alpha", "beta")[i % 2],
            kind=("fact", "decision", "observation")[i % 3],
            tags=[("ci", "db", "style")[i % 3]],
            importance=(i % 5) / 5,
            observed_at=DAY + dt.timedelta(hours=i),
        )
    wait_indexed(c)


QUERIES: list[dict[str, object]] = [
    {"query": "deploy pipeline wheel"},
    {"query": "sqlite schema migration", "workspace": "alpha"},
    {"query": "vector search fusion", "mode": "vector"},
    {"query": "vector search fusion", "mode": "lexical", "workspace": "beta"},
    {"query": "flaky durability test", "kinds": ["decision"], "explain": True},
    {"query": "socket daemon", "tags": ["db"], "recency_boost": 0.5, "importance_boost": 1.0},
    {"query": "dream sleep cluster", "since": DAY + dt.timedelta(days=3), "limit": 25},
    {"query": "the of and"},  # common words only
    {"query": "???"},  # no words at all
]


def answers(c: Client) -> list[tuple[str, list[str], list[tuple[int, float]], list[object]]]:
    out = []
    for q in QUERIES:
        res = c.search(**q)  # type: ignore[arg-type]
        out.append(
            (
                res.mode,
                list(res.notes),
                [(h.memory.id, h.score) for h in res.hits],
                [h.explain for h in res.hits],
            )
        )
    return out


def worker_pids(daemon_pid: int) -> list[int]:
    """The daemon's children running a search worker, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == daemon_pid and b"reverie.daemon.search_worker" in cmd:
            pids.append(int(entry))
    return sorted(pids)


def started(d: Daemon) -> set[int]:
    """Workers the daemon logged as serving (Ready received)."""
    return {int(m) for m in re.findall(r"search_worker_started slot=\d+ pid=(\d+)", d.log())}


def warm_up(d: Daemon, workers: int) -> None:
    """Start the workers (the first search does) and wait until all of them serve."""
    with d.client() as c:
        c.search("warm up")
    wait_until(lambda: len(started(d)) == workers)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_answer_exactly_as_the_daemon_does(tmp_path: Path) -> None:
    with Daemon(tmp_path, config=config(0)) as d:
        with d.client() as c:
            fill(c)
            in_process = answers(c)
        assert d.proc is not None and worker_pids(d.proc.pid) == []  # 0: none ever
    with Daemon(tmp_path, config=config(2)) as d:
        assert d.proc is not None
        warm_up(d, 2)
        with d.client() as c:
            by_workers = answers(c)
        assert set(worker_pids(d.proc.pid)) <= started(d)
    # Scores to 1e-5, because the recency boost reads the clock, and the seconds
    # between the two daemons can move a score's sixth decimal.
    same_answers(by_workers, in_process)
    assert in_process[-1][1] == ["the query has no words"]
    assert any(hits for _, _, hits, _ in in_process)


def same_answers(got: list[Any], want: list[Any]) -> None:
    """Ids, order, notes and explanations exactly; scores to 1e-5 (see above)."""
    assert [(m, n, [i for i, _ in h], e) for m, n, h, e in got] == [
        (m, n, [i for i, _ in h], e) for m, n, h, e in want
    ]
    for (_, _, g, _), (_, _, w, _) in zip(got, want, strict=True):
        assert [s for _, s in g] == pytest.approx([s for _, s in w], abs=1e-5)


def test_searches_queued_for_one_worker_answer_as_the_daemon_does(tmp_path: Path) -> None:
    """Eight clients at once and one worker: most searches wait for it, their
    vector side computed meanwhile (daemon/search_workers.py), and each answers
    as a daemon without workers does."""
    with Daemon(tmp_path, config=config(0)) as d, d.client() as c:
        fill(c)
        want = answers(c)
    with Daemon(tmp_path, config=config(1)) as d:
        warm_up(d, 1)
        got: list[list[Any]] = []

        def client() -> None:
            with d.client() as c:
                for _ in range(3):
                    got.append(answers(c))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert len(got) == 24
    for one in got:
        same_answers(one, want)


def test_a_search_no_worker_takes_runs_in_the_daemon(tmp_path: Path) -> None:
    """The only worker stopped (SIGSTOP) under a search: the next search waits
    WAIT_IDLE_S for a worker, then runs here with the vector side it computed
    meanwhile, and answers as a daemon without workers does; the stopped one
    answers once the worker runs again."""
    query = {"query": "vector search fusion", "workspace": "alpha", "explain": True}
    with Daemon(tmp_path, config=config(0)) as d, d.client() as c:
        fill(c, 60)
        want = c.search(**query)  # type: ignore[arg-type]
    with Daemon(tmp_path, config=config(1)) as d:
        assert d.proc is not None
        warm_up(d, 1)
        (worker,) = worker_pids(d.proc.pid)
        os.kill(worker, signal.SIGSTOP)
        stuck: list[Any] = []

        def first() -> None:
            with d.client(timeout=60) as c:
                stuck.append(c.search(**query))  # type: ignore[arg-type]

        t = threading.Thread(target=first)
        try:
            t.start()
            with d.client(timeout=60) as c:
                # The first search holds the worker (in flight: it and this request).
                wait_until(lambda: c.call(Metrics()).gauges.in_flight == 2)
                began = time.monotonic()
                here = c.search(**query)  # type: ignore[arg-type]
                waited = time.monotonic() - began
        finally:
            os.kill(worker, signal.SIGCONT)
            t.join(60)
    assert waited >= WAIT_IDLE_S
    for res in (here, *stuck):
        assert [(h.memory.id, h.explain) for h in res.hits] == [
            (h.memory.id, h.explain) for h in want.hits
        ]
        assert res.mode == want.mode and res.notes == want.notes
    assert len(stuck) == 1


def test_a_killed_worker_costs_no_answer_and_is_replaced(tmp_path: Path) -> None:
    with Daemon(tmp_path, config=config(2)) as d, d.client() as c:
        assert d.proc is not None
        pid = d.proc.pid
        fill(c, 60)
        want = [h.memory.id for h in c.search("deploy pipeline wheel").hits]
        wait_until(lambda: len(started(d)) == 2)
        victims = worker_pids(pid)
        assert set(victims) == started(d)
        for v in victims:
            os.kill(v, signal.SIGKILL)
        # Every search still answers, the same (in the daemon, until replaced).
        for _ in range(20):
            assert [h.memory.id for h in c.search("deploy pipeline wheel").hits] == want
        wait_until(lambda: len(started(d) - set(victims)) == 2)
        for _ in range(5):
            assert [h.memory.id for h in c.search("deploy pipeline wheel").hits] == want
        assert "search_worker_lost" in d.log()


def test_workers_end_with_the_daemon_even_when_it_is_killed(tmp_path: Path) -> None:
    d = Daemon(tmp_path, config=config(2)).start()
    assert d.proc is not None
    with d.client() as c:
        c.remember("a memory to find", workspace="w")
        c.search("memory")
    wait_until(lambda: len(worker_pids(d.proc.pid)) == 2)  # type: ignore[union-attr]
    pids = worker_pids(d.proc.pid)
    assert d.stop() == 0
    wait_until(lambda: not any(alive(p) for p in pids), 10)

    d = Daemon(tmp_path, config=config(2)).start()
    assert d.proc is not None
    with d.client() as c:
        c.search("memory")
    wait_until(lambda: len(worker_pids(d.proc.pid)) == 2)  # type: ignore[union-attr]
    pids = worker_pids(d.proc.pid)
    d.kill()  # SIGKILL: the workers read EOF and exit by themselves
    wait_until(lambda: not any(alive(p) for p in pids), 10)


def test_workers_count_is_read_at_start_only(tmp_path: Path) -> None:
    with Daemon(tmp_path, config=config(2)) as d, d.client() as c:
        assert d.config_path is not None
        d.config_path.write_text(config(3) + '\n[dreams]\npreset = "off"\n')
        d.signal(signal.SIGHUP)
        wait_until(lambda: "reload_needs_restart" in d.log())
        shown: ConfigShowResult = c.call(ConfigShow())
        assert shown.pending_restart == ["search.workers"]
        assert shown.config["search"]["workers"] == 2  # what runs


@pytest.mark.parametrize(
    ("previous", "lived", "expected"),
    [
        (0.0, 0.0, BACKOFF_FIRST_S),  # the first failure
        (BACKOFF_FIRST_S, 0.5, 2 * BACKOFF_FIRST_S),  # died young again: doubled
        (BACKOFF_MAX_S, 1.0, BACKOFF_MAX_S),  # capped
        (16.0, STABLE_S, BACKOFF_FIRST_S),  # lived long enough: forgiven
    ],
)
def test_restart_back_off(previous: float, lived: float, expected: float) -> None:
    assert next_backoff(previous, lived) == expected
