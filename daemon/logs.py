"""Logging that reads well in the journal and in a terminal.

One record is always one line (newlines in messages and tracebacks are
escaped), so journald never splits a record. When stderr is connected to the
journal (JOURNAL_STREAM names stderr's device and inode), each line starts
with the syslog priority in angle brackets, `<3>` for errors, which journald
turns into the entry's priority; timestamps are then left to journald.
"""

from __future__ import annotations

import json
import logging
import os
import sys

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
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup(level: str, *, json_lines: bool = False) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if json_lines else OneLineFormatter(stderr_is_journal())
    handler.setFormatter(formatter)
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
