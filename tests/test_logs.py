"""Logs: one line per record; syslog priority prefixes when stderr is the journal."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import Daemon
from reverie.daemon.logs import JsonFormatter, OneLineFormatter, event, kv


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
    _wait_for(d, "log_level=debug")
    line = next(x for x in d.log().splitlines() if "reverie.daemon: reload " in x)
    fields = _fields(line)
    assert fields["ok"] == "true" and fields["log_level"] == "debug"
    assert "daemon.log_level" in fields["applied"].split(",")
    assert fields["needs_restart"] == "daemon.max_connections"  # the exact dotted key
    assert " WARNING reverie.daemon: reload_needs_restart keys=daemon.max_connections" in d.log()
    with d.client() as c:
        c.ping()
    d.config_path.write_text("[daemon]\nbogus = 1\n")
    d.signal(signal.SIGHUP)
    _wait_for(d, "reload ok=false kept=running")
    bad = next(x for x in d.log().splitlines() if "reload ok=false" in x)
    assert " ERROR " in bad and "bogus" in _fields(bad)["error"]
    with d.client() as c:
        c.ping()
    assert d.stop() == 0


def _fields(line: str) -> dict[str, str]:
    """key=value pairs of a log line (values bare or JSON-quoted), as a grep would see."""
    out = {}
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line):
        value = m.group(2)
        out[m.group(1)] = json.loads(value) if value.startswith('"') else value
    return out


def test_kv_values_are_quoted_only_when_needed() -> None:
    assert kv({"a": 1, "b": "x y", "c": True, "d": ["k.a", "k.b"], "e": "", "f": 0.25}) == (
        'a=1 b="x y" c=true d=k.a,k.b e="" f=0.25'
    )
    assert kv({"err": 'say "hi"\n'}) == 'err="say \\"hi\\"\\n"'
    assert _fields('x: reload ok=false error="bad key `x` = 1" n=3') == {
        "ok": "false",
        "error": "bad key `x` = 1",
        "n": "3",
    }


def test_event_lines_in_text_journal_and_json() -> None:
    logger = logging.getLogger("reverie.test_event")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        event(logger, logging.WARNING, "reload_needs_restart", keys=["store.readers"], n=2)
        logger.setLevel(logging.ERROR)
        event(logger, logging.INFO, "filtered", x=1)  # below the level: not even formatted
    finally:
        logger.removeHandler(handler)
    assert len(records) == 1
    r = records[0]
    assert OneLineFormatter(journal=True).format(r) == (
        "<4>reverie.test_event: reload_needs_restart keys=store.readers n=2"
    )
    doc = json.loads(JsonFormatter().format(r))
    assert doc["event"] == "reload_needs_restart" and doc["level"] == "warning"
    assert doc["keys"] == ["store.readers"] and doc["n"] == 2


def test_log_level_from_the_environment_and_the_flag(short_tmp: Path) -> None:
    # REVERIE_LOG_LEVEL wins over the file; --log-level wins over both.
    d = Daemon(
        short_tmp, config="[daemon]\nlog_level = 'error'\n", env={"REVERIE_LOG_LEVEL": "info"}
    )
    d.start()
    assert d.stop() == 0
    assert "reverie.daemon: ready " in d.log() and "log_level=info" in d.log()
    d2 = Daemon(short_tmp, name="e", config="[daemon]\nlog_level = 'error'\n")
    d2.extra_env["REVERIE_LOG_LEVEL"] = "info"
    d2.start(args=("--log-level", "warning"))
    assert d2.stop() == 0
    assert "ready " not in d2.log()  # info lines are below --log-level warning
    bad = subprocess.run(
        [sys.executable, "-m", "reverie", "daemon"],
        env={**d2.environ(), "REVERIE_LOG_LEVEL": "loud"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "REVERIE_LOG_LEVEL" in bad.stderr


def test_main_lines_are_key_value(short_tmp: Path) -> None:
    d = Daemon(short_tmp).start()
    assert d.stop() == 0
    lines = {x.split(": ", 1)[1].split(" ", 1)[0]: x for x in d.log().splitlines() if ": " in x}
    ready = _fields(lines["ready"])
    assert ready["pid"].isdigit() and ready["activated"] == "false"
    assert ready["socket"] == str(d.socket) and int(ready["startup_ms"]) >= 0
    assert _fields(lines["signal"])["signal"] == "SIGTERM"
    assert "grace_s" in _fields(lines["stopping"])
    assert _fields(lines["stopped"])["db"] == "closed_cleanly"
