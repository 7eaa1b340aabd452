"""sd_notify and socket activation, spoken to real sockets without systemd.

The test plays systemd's part: it listens on a datagram socket named by
NOTIFY_SOCKET (a path or an abstract `@name`) and reads what the daemon
announces, or it binds the listening socket itself and hands it over as fd 3
with LISTEN_FDS/LISTEN_PID. The watchdog's cadence is also checked exactly,
in-process, on trio's MockClock.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import signal
import socket
import stat
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing
from harness import Daemon, raw_connect
from reverie.daemon.systemd import Notifier, watchdog_interval, watchdog_loop
from reverie.rpc.protocol import PROTOCOL_VERSION, Hello
from reverie.store.database import Database

WATCHDOG_USEC = 200_000  # pings expected every 0.1 s


class NotifySocket:
    """What systemd listens on: a datagram socket; each datagram is KEY=VALUE lines."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.seen: list[tuple[float, dict[str, str]]] = []

    def close(self) -> None:
        self.sock.close()

    def receive(self, timeout: float) -> dict[str, str] | None:
        """The next message, or None if none came within `timeout` seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        self.seen.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key: str, timeout: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is not None and key in msg:
                return msg
        raise AssertionError(f"no {key}= within {timeout}s; got {[m for _, m in self.seen]}")

    def collect(self, seconds: float) -> list[tuple[float, dict[str, str]]]:
        """Every message that arrives during the next `seconds`."""
        start = len(self.seen)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.receive(left)
        return self.seen[start:]


@pytest.fixture(params=["path", "abstract"])
def notify(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[NotifySocket]:
    if request.param == "path":
        address = str(short_tmp / "notify")
    else:
        address = f"@reverie-test-{uuid.uuid4().hex}"
    n = NotifySocket(address)
    yield n
    n.close()


def spawn(d: Daemon, argv: list[str], pass_fds: tuple[int, ...] = ()) -> Daemon:
    """Start the daemon with a command line of our own (the harness's start, through sh)."""
    with d.log_path.open("ab") as log:
        d.proc = subprocess.Popen(
            argv, env=d.environ(), stdout=log, stderr=subprocess.STDOUT, pass_fds=pass_fds
        )
    return d


def through_sh(script: str) -> list[str]:
    """`sh -c script` with "$0" naming our Python, so the script can exec the daemon."""
    return ["sh", "-c", script, sys.executable]


def hello_works(path: Path) -> bool:
    with raw_connect(path, timeout=5) as s:
        body = msgspec.msgpack.encode(Hello(id=1, protocol=PROTOCOL_VERSION))
        s.sendall(len(body).to_bytes(4, "big") + body)
        return len(s.recv(65536)) > 4


# --- sd_notify ------------------------------------------------------------------------------


def test_ready_status_reload_and_stopping(short_tmp: Path, notify: NotifySocket) -> None:
    d = Daemon(short_tmp, env={"NOTIFY_SOCKET": notify.address}).start(wait=False)
    assert d.proc is not None
    ready = notify.wait_for("READY")
    # systemd starts dependent units at READY=1: the socket must already accept.
    assert hello_works(d.socket)
    assert ready["READY"] == "1"
    assert ready["MAINPID"] == str(d.proc.pid)
    assert ready["STATUS"]
    assert notify.wait_for("STATUS", timeout=10)["STATUS"].startswith("serving")
    d.signal(signal.SIGHUP)
    assert notify.wait_for("RELOADING")["RELOADING"] == "1"
    assert notify.wait_for("READY")["READY"] == "1"
    d.signal(signal.SIGTERM)
    assert notify.wait_for("STOPPING")["STOPPING"] == "1"
    assert d.proc.wait(30) == 0, d.log()


def _pings(notify: NotifySocket, seconds: float) -> list[float]:
    return [t for t, msg in notify.collect(seconds) if msg.get("WATCHDOG") == "1"]


@pytest.mark.parametrize("watchdog_pid", ["unset", "own"])
def test_watchdog_pings_at_half_the_interval(short_tmp: Path, watchdog_pid: str) -> None:
    notify = NotifySocket(str(short_tmp / "notify"))
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    d = Daemon(short_tmp, env=env)
    if watchdog_pid == "unset":
        d.start(wait=False)
    else:  # the pid is only known after the fork: let the shell name itself, then exec
        spawn(d, through_sh('WATCHDOG_PID=$$ exec "$0" -m reverie daemon'))
    try:
        notify.wait_for("READY")
        pings = _pings(notify, 1.5)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # 15 expected; the bounds tell half of WATCHDOG_USEC from all of it or a quarter.
        assert 8 <= len(pings) <= 22, pings
        assert 0.08 <= statistics.median(gaps) <= 0.16, gaps
    finally:
        assert d.stop() == 0, d.log()
        notify.close()


def test_no_watchdog_pings_for_another_pid(short_tmp: Path) -> None:
    notify = NotifySocket(str(short_tmp / "notify"))
    env = {
        "NOTIFY_SOCKET": notify.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "WATCHDOG_PID": "1",  # the watchdog is meant for init, not for us
    }
    d = Daemon(short_tmp, env=env).start(wait=False)
    try:
        notify.wait_for("READY")
        assert _pings(notify, 0.6) == []  # six would-be pings
    finally:
        assert d.stop() == 0, d.log()
        notify.close()


def test_no_notify_socket_means_no_announcements(daemon: Daemon) -> None:
    # Nothing to assert on the wire; the daemon must simply run and stop cleanly.
    with daemon.client() as c:
        c.ping()


# --- the watchdog loop on a mock clock ---------------------------------------------------------


async def _watchdog_pings(data_dir: Path, run_for: float, kill_writer: bool) -> list[float]:
    """Run the daemon's watchdog loop for `run_for` virtual seconds; return ping times.

    Health is the real writer thread's liveness, as in the daemon.
    """
    db = await Database.open(data_dir)
    sock = trio.socket.from_stdlib_socket(NotifySocket(os.environ["NOTIFY_SOCKET"]).sock)
    times: list[float] = []
    try:
        if kill_writer:
            await db.close()  # the writer thread has stopped
        interval = watchdog_interval()
        assert interval == WATCHDOG_USEC / 2 / 1_000_000
        notifier = Notifier()
        start = trio.current_time()

        async def listen() -> None:
            while True:
                if await sock.recv(4096) == b"WATCHDOG=1":
                    times.append(round(trio.current_time() - start, 9))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            with trio.move_on_after(run_for):
                await watchdog_loop(notifier, interval, lambda: db.writer.alive)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    finally:
        sock.close()
        if not kill_writer:
            await db.close()
    return times


@pytest.fixture
def mock_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment systemd gives a service with WatchdogSec=, in this process."""
    monkeypatch.setenv("NOTIFY_SOCKET", f"@reverie-mock-{uuid.uuid4().hex}")
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)


def test_watchdog_loop_cadence_is_exact(tmp_path: Path, mock_systemd: None) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    times = trio.run(_watchdog_pings, tmp_path, 1.05, False, clock=clock)
    assert times == [round(i * 0.1, 9) for i in range(11)]


def test_watchdog_withholds_pings_when_the_writer_died(
    tmp_path: Path, mock_systemd: None, caplog: pytest.LogCaptureFixture
) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    with caplog.at_level(logging.ERROR, logger="reverie.daemon"):
        times = trio.run(_watchdog_pings, tmp_path, 0.55, True, clock=clock)
    assert times == []
    withheld = [r for r in caplog.records if "withholding the watchdog ping" in r.getMessage()]
    assert len(withheld) == 6  # once per interval, at 0.0 .. 0.5


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("200000", None, 0.1),
        ("200000", "self", 0.1),
        ("200000", "1", None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for var, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval() == expected


# --- socket activation -----------------------------------------------------------------------


def _listening_socket(path: Path) -> tuple[socket.socket, int]:
    """A bound, listening socket, and a duplicate of its fd numbered 10 or above."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(16)
    return s, fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 10)


# What systemd does between fork and exec: the socket becomes fd 3, and
# LISTEN_PID names the process that will run the daemon (this one, after
# exec). A shell's `exec 3<&N` would do, but dash takes only one-digit fds.
_ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = sys.argv[2] or str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "reverie", "daemon"])
"""


def activate(d: Daemon, fd: int, *, listen_pid: str = "") -> Daemon:
    """Start the daemon with `fd` as its fd 3 (LISTEN_PID: its own pid, unless given)."""
    spawn(d, [sys.executable, "-c", _ACTIVATE, str(fd), listen_pid], pass_fds=(fd,))
    os.close(fd)
    return d


def test_socket_activation_serves_the_passed_socket(short_tmp: Path) -> None:
    path = short_tmp / "activated.sock"
    listener, fd = _listening_socket(path)
    d = Daemon(short_tmp)
    d.socket = path  # what the unit's ListenStream= names
    activate(d, fd)
    try:
        d.wait_ready()
        with d.client() as c:
            st = c.status()
            assert st.socket_activated
            assert st.socket == str(path)
            c.remember("served through an inherited socket")
            assert c.search("inherited").hits
        assert "activated=true" in d.log()  # logs (issue 6): key=value, lowercase booleans
    finally:
        assert d.stop() == 0, d.log()
    # The socket belongs to systemd (here, the test): the daemon leaves its path alone.
    assert stat.S_ISSOCK(path.lstat().st_mode)
    listener.close()


def test_listen_pid_of_another_process_is_ignored(short_tmp: Path) -> None:
    decoy = short_tmp / "decoy.sock"
    listener, fd = _listening_socket(decoy)
    d = Daemon(short_tmp)
    activate(d, fd, listen_pid="1")  # meant for init, not for us
    try:
        d.wait_ready()
        with d.client() as c:
            st = c.status()
            assert not st.socket_activated
            assert st.socket == str(d.socket)
        assert stat.S_ISSOCK(d.socket.lstat().st_mode)  # bound by the daemon itself
    finally:
        assert d.stop() == 0, d.log()
    assert not d.socket.exists()  # and removed by it on exit
    assert stat.S_ISSOCK(decoy.lstat().st_mode)
    listener.close()
