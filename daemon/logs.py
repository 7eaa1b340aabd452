"""Logging that reads well in the journal and in a terminal.

One record is always one line (newlines in messages and tracebacks are
escaped), so journald never splits a record. When stderr is connected to the
journal (JOURNAL_STREAM names stderr's device and inode), each line starts
with the syslog priority in angle brackets, `<3>` for errors, which journald
turns into the entry's priority; timestamps are then left to journald.

Messages are an event name then key=value fields (logfmt), e.g.

    reverie.daemon: ready version=0.1.0 pid=4242 socket=/run/reverie/reverie.sock
    reverie.daemon: reload ok=true applied=daemon.log_level needs_restart=store.readers

so `journalctl -u reverie | grep ': reload '` or `grep needs_restart=`
work. `event()` writes them; values holding spaces, quotes or `=` are quoted
JSON-style, lists are joined with commas. With `--json` the same fields are
keys of the JSON object, beside "event".
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    dev, _, ino = stream.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


class OneLineFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        fmt = (
            "%(name)s: %(message)s"
            if journal
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        super().__init__(fmt)
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\\", "\\\\").replace("\n", "\\n")
        if self._journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record (`reverie daemon --json`), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "kv", None)
        if isinstance(fields, Mapping):
            doc["event"] = getattr(record, "event", "")
            for k, v in fields.items():
                doc.setdefault(k, _plain(v))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


_BARE = re.compile(r"[^\s\"=\\]+")


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def kv_value(value: Any) -> str:
    """One logfmt value: bare when it can be, else a JSON-quoted string."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, list | tuple | set | frozenset):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def kv(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={kv_value(v)}" for k, v in fields.items())


def event(logger: logging.Logger, level: int, name: str, /, **fields: Any) -> None:
    """Log `name k=v k=v ...`; formatted only when the level is enabled."""
    if logger.isEnabledFor(level):
        msg = f"{name} {kv(fields)}" if fields else name
        logger.log(level, "%s", msg, extra={"event": name, "kv": fields})


def setup(level: str, *, json_lines: bool = False) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if json_lines else OneLineFormatter(stderr_is_journal())
    handler.setFormatter(formatter)
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    """Also used by SIGHUP: the handlers pass everything, the root logger filters."""
    logging.getLogger().setLevel(level.upper())
