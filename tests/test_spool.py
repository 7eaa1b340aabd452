"""The spool: durable files written while the daemon is away, drained exactly once.

The drainer's timer runs on trio's MockClock against the real drain code and
a real database; the end-to-end test writes spool files while no daemon runs,
then starts one.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import time
from pathlib import Path

import pytest
import trio
import trio.testing
from harness import Daemon
from reverie.daemon.spool_drain import SpoolDrainer
from reverie.rpc import spool
from reverie.rpc.proto_events import Event, ListEvents, ListEventsResult
from reverie.store.database import Database

WS = "git:example.com/team/app"


def events(prefix: str, n: int, **kw: object) -> list[Event]:
    return [
        Event(
            key=f"{prefix}-{i}",
            harness="claude-code",
            type="UserPromptSubmit",
            workspace=WS,
            session_id="sess-1",
            payload={"prompt": f"spooled prompt {prefix} number {i}"},
            **kw,  # type: ignore[arg-type]
        )
        for i in range(n)
    ]


# -- the files ----------------------------------------------------------------------------


def test_append_writes_one_private_file_that_reads_back(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    evs = events("a", 3)
    path = spool.append(evs, d)
    assert path is not None and path.parent == d
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stamp, pid, rand = path.name.removesuffix(".jsonl").split("-")
    assert int(pid) == os.getpid() and len(rand) == 8 and abs(int(stamp) - time.time_ns()) < 60e9
    got = spool.read(path)
    assert got.bad_lines == []
    # `at` was filled in: a drained event keeps when it happened.
    assert [e.at is not None for e in got.events] == [True] * 3
    assert [e.key for e in got.events] == ["a-0", "a-1", "a-2"]
    assert got.events[0].payload == evs[0].payload
    assert [p.name for p in spool.pending(d)] == [path.name]
    assert spool.append([], d) is None
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    kept = spool.read(spool.append(events("b", 1, at=at), d))  # type: ignore[arg-type]
    assert kept.events[0].at == at
    assert list(d.glob(".tmp-*")) == []  # no temporary file left behind


def test_corrupt_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    good = spool.encode_lines(events("c", 2)).split(b"\n")
    path = tmp_path / "1-1-x.jsonl"
    path.write_bytes(good[0] + b"\n{not json\n\xff\xfe\n" + b'{"key": "k"}\n\n' + good[1] + b"\n")
    got = spool.read(path)
    assert [e.key for e in got.events] == ["c-0", "c-1"]
    assert got.bad_lines == [2, 3, 4]


def test_pending_lists_finished_files_oldest_first(tmp_path: Path) -> None:
    d = tmp_path
    for name in ("20-1-b.jsonl", "10-1-a.jsonl", "notes.txt", ".hidden.jsonl"):
        (d / name).write_text("")
    (d / "bad").mkdir()
    (d / "bad" / "5-1-z.jsonl").write_text("")
    fresh = d / ".tmp-15-1-c.jsonl"  # a hook is writing it right now
    fresh.write_text("")
    stale = d / ".tmp-12-1-d.jsonl"  # its writer died before the rename
    stale.write_text("")
    old = time.time() - spool.STALE_TEMP_S - 60
    os.utime(stale, (old, old))
    assert [p.name for p in spool.pending(d)] == [
        "10-1-a.jsonl",
        ".tmp-12-1-d.jsonl",
        "20-1-b.jsonl",
    ]
    assert spool.pending(d / "missing") == []


def test_spool_dir_follows_the_daemons_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("REVERIE_SPOOL_DIR", "REVERIE_DATA_DIR", "REVERIE_CONFIG", "STATE_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert spool.spool_dir() == tmp_path / "state" / "reverie" / "spool"
    cfg = tmp_path / "r.toml"
    cfg.write_text(f"[daemon]\ndata_dir = '{tmp_path / 'data'}'\n")
    monkeypatch.setenv("REVERIE_CONFIG", str(cfg))
    assert spool.spool_dir() == tmp_path / "data" / "spool"
    cfg.write_text(f"[daemon]\ndata_dir = '/x'\n[events]\nspool_dir = '{tmp_path / 'sp'}'\n")
    assert spool.spool_dir() == tmp_path / "sp"
    cfg.write_text("[daemon]\nnot_a_key = 1\n")  # broken: fall back, never fail the hook
    monkeypatch.setenv("REVERIE_DATA_DIR", str(tmp_path / "env-data"))
    assert spool.spool_dir() == tmp_path / "env-data" / "spool"
    monkeypatch.setenv("REVERIE_SPOOL_DIR", str(tmp_path / "env-spool"))
    assert spool.spool_dir() == tmp_path / "env-spool"


# -- the drainer, on a mock clock and a real database ------------------------------------------


def _keys(db_path: Path) -> list[str]:
    import apsw

    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [k for (k,) in conn.execute("SELECT idem_key FROM events ORDER BY id")]
    finally:
        conn.close()


def test_drainer_runs_at_start_then_on_its_timer(tmp_path: Path) -> None:
    data, d = tmp_path / "data", tmp_path / "data" / "spool"
    data.mkdir()
    first = spool.append(events("start", 2), d)
    written: list[int] = []

    async def main() -> None:
        db = await Database.open(data)
        try:
            drainer = SpoolDrainer(db, d, interval_s=5.0, on_written=lambda: written.append(1))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drainer.run)
                await drainer.wait_passes(1)
                assert trio.current_time() == 0
                assert first is not None and not first.exists()
                assert drainer.totals.stored == 2 and drainer.totals.observations == 2
                assert written  # the vector indexer would be woken
                # A file that arrives later waits for the timer.
                later = spool.append(events("later", 3), d)
                assert later is not None
                await trio.sleep(4.9)
                assert later.exists()
                await drainer.wait_passes(2)
                assert trio.current_time() == pytest.approx(5.0)
                assert not later.exists()
                # The same events again (a file drained but not deleted before a
                # crash): nothing is stored twice.
                spool.append(events("later", 3), d)
                await drainer.wait_passes(3)
                assert trio.current_time() == pytest.approx(10.0)
                assert drainer.totals.stored == 5 and drainer.totals.duplicates == 3
                nursery.cancel_scope.cancel()
        finally:
            await db.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    keys = _keys(data / "reverie.db")
    assert sorted(keys) == sorted(
        [f"start-{i}" for i in range(2)] + [f"later-{i}" for i in range(3)]
    )
    assert spool.pending(d) == []


def test_unreadable_files_are_set_aside_and_good_lines_kept(tmp_path: Path) -> None:
    data, d = tmp_path / "data", tmp_path / "data" / "spool"
    d.mkdir(parents=True)
    (d / "1-1-garbage.jsonl").write_bytes(b"\x00\x01 not an event\n{\n")
    good = spool.encode_lines(events("mixed", 2))
    (d / "2-1-mixed.jsonl").write_bytes(good + b"{broken\n")
    (d / "3-1-empty.jsonl").write_bytes(b"\n\n")

    async def main() -> None:
        db = await Database.open(data)
        try:
            report = await SpoolDrainer(db, d, interval_s=0).drain_once()
        finally:
            await db.close()
        assert (report.files, report.bad_files, report.bad_lines) == (2, 2, 3)
        assert report.stored == 2

    trio.run(main)
    assert sorted(p.name for p in (d / "bad").iterdir()) == ["1-1-garbage.jsonl", "2-1-mixed.jsonl"]
    assert spool.pending(d) == []
    assert sorted(_keys(data / "reverie.db")) == ["mixed-0", "mixed-1"]


# -- end to end: spooled while the daemon was down ---------------------------------------------


def _logged(d: Daemon, n: int, timeout: float = 30.0) -> list[str]:
    """The event keys once at least n are in, polling the daemon (the drain runs after ready)."""
    deadline = time.monotonic() + timeout
    with d.client() as c:
        while True:
            res: ListEventsResult = c.call(ListEvents(limit=1000))
            if len(res.events) >= n or time.monotonic() > deadline:
                return sorted(e.key for e in res.events)
            time.sleep(0.05)


def test_events_spooled_while_the_daemon_was_down_appear_once(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    spool_path = d.data_dir / "spool"
    batch = events("down", 4)
    spool.append(batch[:2], spool_path)
    spool.append(batch[2:], spool_path)
    d.start()
    try:
        assert _logged(d, 4) == [f"down-{i}" for i in range(4)]
        with d.client() as c:
            assert len(c.search("spooled prompt down", limit=50).hits) == 4
        assert spool.pending(spool_path) == []
    finally:
        assert d.stop() == 0
    # As if the daemon had crashed after committing but before deleting: the
    # same file is drained again at the next start, and nothing is doubled.
    spool.append(batch, spool_path)
    d.start()
    try:
        spool.append(events("up", 1), spool_path)  # while running (start drain or timer)
        assert _logged(d, 5) == sorted([f"down-{i}" for i in range(4)] + ["up-0"])
        with d.client() as c:
            hits = c.search("spooled prompt down", limit=50).hits
            assert len([h for h in hits if " down " in h.memory.content]) == 4
        deadline = time.monotonic() + 30
        while spool.pending(spool_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spool.pending(spool_path) == []
        assert "duplicates=4" in d.log()  # the re-drained file: seen, not stored again
    finally:
        assert d.stop() == 0
