"""Logs: one line per record; syslog priority prefixes when stderr is the journal."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

from harness import Daemon
from reverie.daemon.logs import OneLineFormatter


def _wait_for(d: Daemon, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in d.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{d.log()}"
        time.sleep(0.02)


def test_priority_prefixes_when_stderr_is_the_journal(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    d.log_path.touch()
    st = os.stat(d.log_path)  # the harness sends stderr to this file
    d.extra_env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    d.start()
    assert d.stop() == 0
    lines = d.log().splitlines()
    assert lines and all(line.startswith("<") for line in lines), lines
    assert any(line.startswith("<6>reverie.daemon: ready") for line in lines)


def test_plain_lines_otherwise(short_tmp: Path) -> None:
    d = Daemon(short_tmp).start()
    assert d.stop() == 0
    text = d.log()
    assert " INFO reverie.daemon: ready " in text and not text.startswith("<")


def test_tracebacks_and_newlines_stay_on_one_line() -> None:
    formatter = OneLineFormatter(journal=True)
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        record = logging.LogRecord(
            "reverie.x", logging.ERROR, __file__, 1, "failed\nbadly", None, sys.exc_info()
        )
    line = formatter.format(record)
    assert "\n" not in line and line.startswith("<3>reverie.x: failed")
    assert "Traceback" in line and "second line" in line


def test_sighup_reloads_the_log_level(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config="[daemon]\nlog_level = 'info'\n").start()
    assert d.config_path is not None
    d.config_path.write_text("[daemon]\nlog_level = 'debug'\nmax_connections = 7\n")
    d.signal(signal.SIGHUP)
    _wait_for(d, "reloaded config log_level=debug")
    assert "daemon.max_connections" in d.log()  # named as needing a restart
    with d.client() as c:
        c.ping()
    d.config_path.write_text("[daemon]\nbogus = 1\n")
    d.signal(signal.SIGHUP)
    _wait_for(d, "reload failed, keeping the running config")
    with d.client() as c:
        c.ping()
    assert d.stop() == 0
