"""Search worker processes (daemon/search_workers.py): same answers, and a lost worker
costs no answer."""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import signal
from pathlib import Path

import pytest
from harness import Daemon, wait_indexed, wait_until
from reverie.daemon.search_workers import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    STABLE_S,
    next_backoff,
)
from reverie.rpc.client import Client
from reverie.rpc.proto_config import ConfigShow, ConfigShowResult

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
        with d.client() as c:
            c.search("warm up")  # starts them
            wait_until(lambda: len(started(d)) == 2)
            by_workers = answers(c)
        assert set(worker_pids(d.proc.pid)) <= started(d)
    # Ids, order, notes and explanations exactly; scores to 1e-5, because the
    # recency boost reads the clock, and the seconds between the two daemons can
    # move a score's sixth decimal.
    assert [(m, n, [i for i, _ in h], e) for m, n, h, e in by_workers] == [
        (m, n, [i for i, _ in h], e) for m, n, h, e in in_process
    ]
    for (_, _, got, _), (_, _, want, _) in zip(by_workers, in_process, strict=True):
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
    assert in_process[-1][1] == ["the query has no words"]
    assert any(hits for _, _, hits, _ in in_process)


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
