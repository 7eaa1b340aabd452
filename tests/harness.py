"""Start and stop a real reverie daemon process for tests and benchmarks.

Each daemon gets its own data dir and socket under a temporary directory and
runs as `python -m reverie daemon`, exactly as a user would start it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from reverie.rpc.client import Client
from reverie.rpc.protocol import MemoryRecord

START_TIMEOUT = 30.0
NO_DREAMS = '\n[dreams]\npreset = "off"\n'


class Daemon:
    def __init__(
        self,
        root: Path,
        *,
        config: str | None = None,
        env: Mapping[str, str] | None = None,
        name: str = "d",
    ) -> None:
        self.root = root
        self.data_dir = root / f"{name}-data"
        # Unix socket paths are limited to 108 bytes: keep them short.
        self.socket = root / f"{name}.sock"
        self.log_path = root / f"{name}.log"
        # Test daemons do not dream on their own (a scheduled light sleep would
        # change memories under a test): a config without [dreams] gets preset off.
        if config is None or not re.search(r"^\s*\[dreams[.\]]", config, re.MULTILINE):
            config = (config or "") + NO_DREAMS
        self.config_path: Path | None = root / f"{name}.toml"
        self.config_path.write_text(config)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def environ(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REVERIE_", "NOTIFY_", "LISTEN_", "WATCHDOG_"))
        }
        env["REVERIE_DATA_DIR"] = str(self.data_dir)
        env["REVERIE_SOCKET"] = str(self.socket)
        env["PYTHONUNBUFFERED"] = "1"
        if self.config_path is not None:
            env["REVERIE_CONFIG"] = str(self.config_path)
        env.update(self.extra_env)
        return env

    def start(
        self, *, wait: bool = True, pass_fds: tuple[int, ...] = (), args: tuple[str, ...] = ()
    ) -> Daemon:
        """Run `reverie daemon` with `args` (flags such as --log-level) appended."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reverie", "daemon", *args],
            env=self.environ(),
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the daemon answers a ping (or fail with its log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                try:
                    with self.client(timeout=5) as c:
                        c.ping()
                    return
                except (OSError, Exception):
                    pass
            time.sleep(0.02)
        raise TimeoutError(f"daemon not ready after {timeout}s:\n{self.log()}")

    def client(self, timeout: float | None = 30.0) -> Client:
        return Client(self.socket, timeout=timeout, name="tests")

    def cli(
        self,
        *args: str,
        stdin: str | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`reverie *args` as a user would run it against this daemon (text output)."""
        return run_reverie(*args, env={**self.environ(), **(env or {})}, stdin=stdin, cwd=cwd)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Daemon:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill() if t is not None else self.stop()


def wait_until(pred: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """Poll `pred` (a state another process or thread reaches) until true, or fail."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or pred}")
        time.sleep(0.02)


def wait_indexed(c: Client, timeout: float = 60.0) -> None:
    """Until the vector index is ready and has caught up with every write."""
    deadline = time.monotonic() + timeout
    while True:
        ix = c.status().index
        if ix is not None and ix.phase == "ready" and ix.pending == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the vector index has not caught up: {ix}")
        time.sleep(0.05)


def raw_connect(path: Path, timeout: float = 10.0) -> socket.socket:
    """A plain socket to the daemon, for tests that speak bytes directly."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    return s


def record(
    content: str,
    *,
    uid: str | None = None,
    workspace: str = "default",
    kind: str = "fact",
    at: dt.datetime | None = None,
    **fields: Any,
) -> MemoryRecord:
    """An import record created, observed and updated at `at` (now), with a fresh uid."""
    at = at or dt.datetime.now(dt.UTC)
    return MemoryRecord(
        uid=uid or uuid.uuid4().hex,
        workspace=workspace,
        kind=kind,
        content=content,
        created_at=at,
        observed_at=at,
        updated_at=at,
        **fields,
    )


def run_reverie(
    *args: str, env: Mapping[str, str], stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`reverie *args` in a process of its own with exactly `env` (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "reverie", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        env=env,
        cwd=cwd,
    )
