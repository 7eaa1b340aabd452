"""SIGHUP with a real daemon: what changes at run time, and what waits for a restart."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness import Daemon
from reverie.rpc.client import Client
from reverie.rpc.proto_config import ConfigShow, ConfigShowResult
from reverie.rpc.proto_dreams import DreamsStatus, DreamsStatusResult
from reverie.rpc.proto_sessions import SessionList, SessionListResult

T = TypeVar("T")

BEFORE = """
[daemon]
log_level = "info"
idle_timeout_s = 0.3
[sessions]
stale_after_s = 1800.0
[dreams]
preset = "off"
"""

AFTER = """
[daemon]
log_level = "debug"
idle_timeout_s = 0.3
max_connections = 7
[store]
readers = 2
[search]
mode = "lexical"
[sessions]
stale_after_s = 60.0
[dreams]
preset = "core"
timezone = "UTC"
[dreams.light_sleep]
half_life_days = 3.0
"""


def _until(fn: Callable[[], T | None], what: str, d: Daemon, timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got is not None and got is not False:
            return got
        assert time.monotonic() < deadline, f"{what}:\n{d.log()}"
        time.sleep(0.02)


def _show(c: Client) -> ConfigShowResult:
    res: ConfigShowResult = c.call(ConfigShow())
    return res


def _reloaded(d: Daemon, after: float) -> ConfigShowResult:
    def done() -> ConfigShowResult | None:
        with d.client() as c:
            res = _show(c)
        return res if res.last_reload is not None and res.last_reload.at >= after else None

    return _until(done, "no reload reported", d)


def _idle_close_logged(d: Daemon) -> bool:
    """Open a connection and let the daemon close it as idle (logged at debug)."""
    before = d.log().count("closing connection")
    with d.client() as c:
        c.ping()
        time.sleep(0.6)  # past idle_timeout_s: the daemon closes it
    time.sleep(0.2)
    return d.log().count("closing connection") > before


def test_sighup_applies_what_it_can_and_names_the_rest(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config=BEFORE).start()
    assert d.config_path is not None
    with d.client() as c:
        first = _show(c)
        assert first.last_reload is None and first.pending_restart == []
        assert first.config["sessions"]["stale_after_s"] == 1800.0
        assert first.sources["daemon.idle_timeout_s"] == f"file {d.config_path}"
        assert first.sources["daemon.socket"] == "env REVERIE_SOCKET"
        status: DreamsStatusResult = c.call(DreamsStatus())
        assert all(p.next_run is None for p in status.phases)  # preset off
    assert not _idle_close_logged(d)  # info: the debug line is not written

    t0 = time.time()
    d.config_path.write_text(AFTER)
    d.signal(signal.SIGHUP)
    res = _reloaded(d, t0)
    r = res.last_reload
    assert r is not None and r.ok, r
    assert r.needs_restart == ["daemon.max_connections", "store.readers"]
    assert res.pending_restart == r.needs_restart
    for key in (
        "daemon.log_level",
        "search.mode",
        "sessions.stale_after_s",
        "dreams.preset",
        "dreams.timezone",
        "dreams.light_sleep.half_life_days",
    ):
        assert key in r.applied, (key, r.applied)
    # Running values: reloaded keys changed, restart-only ones did not.
    assert res.config["daemon"]["log_level"] == "debug"
    assert res.config["store"]["readers"] == 4 and res.sources["store.readers"] == "default"
    assert res.config["daemon"]["max_connections"] == 256
    assert res.config["dreams"]["light_sleep"]["half_life_days"] == 3.0
    assert "reload ok=true" in d.log()
    assert "needs_restart=daemon.max_connections,store.readers" in d.log()

    with d.client() as c:
        # sessions.stale_after_s: the coordination layer reads the new value.
        sessions: SessionListResult = c.call(SessionList())
        assert sessions.stale_after_s == 60.0
        # Schedules: preset core now has a next run for every phase.
        status = c.call(DreamsStatus())
        assert status.phases and all(p.next_run is not None for p in status.phases)
        # search.mode: a search without a mode now runs lexical only.
        assert c.search("anything").mode == "lexical"
    assert _idle_close_logged(d)  # debug now: the idle close is logged

    # Back to the running values: nothing waits for a restart any more.
    t1 = time.time()
    d.config_path.write_text(AFTER.replace("max_connections = 7\n", "").replace("readers = 2", ""))
    d.signal(signal.SIGHUP)
    res = _reloaded(d, t1)
    assert res.pending_restart == [] and res.last_reload is not None and res.last_reload.ok
    assert d.stop() == 0


def test_a_bad_file_keeps_the_running_config(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config=BEFORE).start()
    assert d.config_path is not None
    t0 = time.time()
    d.config_path.write_text(BEFORE.replace("[sessions]", "[sessions]\nstale_after = 5"))
    d.signal(signal.SIGHUP)
    res = _reloaded(d, t0)
    r = res.last_reload
    assert r is not None and not r.ok and "stale_after" in r.error
    assert res.config["sessions"]["stale_after_s"] == 1800.0
    assert "reload ok=false kept=running" in d.log()
    with d.client() as c:
        c.ping()
    assert d.stop() == 0


def test_flags_keep_winning_over_the_file_on_reload(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config=BEFORE).start(args=("--log-level", "debug"))
    assert d.config_path is not None
    with d.client() as c:
        res = _show(c)
    assert res.config["daemon"]["log_level"] == "debug"
    assert res.sources["daemon.log_level"] == "flag --log-level"
    assert "log_level=debug" in d.log()  # the ready line
    t0 = time.time()
    d.config_path.write_text(BEFORE.replace("1800.0", "900.0"))
    d.signal(signal.SIGHUP)
    res = _reloaded(d, t0)
    assert res.config["daemon"]["log_level"] == "debug"  # the file says info: the flag wins
    assert res.config["sessions"]["stale_after_s"] == 900.0
    assert res.last_reload is not None and res.last_reload.applied == ["sessions.stale_after_s"]
    assert d.stop() == 0


def test_config_show_running_cli(short_tmp: Path) -> None:
    d = Daemon(
        short_tmp,
        config=BEFORE + "[embedder]\nname = 'lexical'\napi_key = 'sk-never-shown'\n",
    ).start()
    out = subprocess.run(
        [sys.executable, "-m", "reverie", "config", "show", "--running"],
        capture_output=True,
        text=True,
        timeout=60,
        env=d.environ(),
    )
    assert out.returncode == 0, out.stderr
    assert "sk-never-shown" not in out.stdout
    assert 'api_key = "***"' in out.stdout
    assert "stale_after_s = 1800.0  # file" in out.stdout
    assert d.stop() == 0
