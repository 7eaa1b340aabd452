"""Fixtures shared by the test suite: real daemons on temporary data dirs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path (Unix socket paths max 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="rv-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[Daemon]:
    d = Daemon(short_tmp).start()
    try:
        yield d
    finally:
        code = d.stop()
        assert code == 0, f"daemon exited with {code}:\n{d.log()}"


@pytest.fixture
def reap_daemons(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Kill, at the end of the test, every daemon it started: for tests that
    start daemons by hand and may fail before stopping them."""
    started: list[Daemon] = []
    real_start = Daemon.start

    def start(self: Daemon, **kw: Any) -> Daemon:
        started.append(self)
        return real_start(self, **kw)

    monkeypatch.setattr(Daemon, "start", start)
    yield
    for d in started:
        d.kill()
