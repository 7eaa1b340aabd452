"""The two systemd protocols a service speaks: sd_notify and socket activation.

Both are plain sockets and environment variables, so they work (and are
tested) without systemd: a test can listen on NOTIFY_SOCKET or hand us a
listening socket as fd 3.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Callable

import sdnotify
import trio

log = logging.getLogger("reverie.daemon.systemd")
SD_LISTEN_FDS_START = 3


class Notifier:
    """sd_notify messages; a silent no-op when NOTIFY_SOCKET is not set."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None
        self._last_status = ""

    def send(self, message: str) -> None:
        if self._sd is not None:
            self._sd.notify(message)

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=stopping")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


async def watchdog_loop(notifier: Notifier, interval: float, healthy: Callable[[], bool]) -> None:
    """Ping WATCHDOG=1 every `interval` seconds while `healthy()` holds.

    Pinging from the event loop proves the loop is alive; `healthy` adds what
    the loop cannot see (the writer thread), so that systemd restarts a daemon
    whose loop runs but whose writes would hang.
    """
    while True:
        if healthy():
            notifier.watchdog()
        else:
            log.error("the writer thread stopped; withholding the watchdog ping")
        await trio.sleep(interval)


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 2 / 1_000_000 if value > 0 else None


def activated_socket() -> socket.socket | None:
    """The listening socket systemd passed us (LISTEN_FDS), or None.

    The variables are removed afterwards so that any child process does not
    believe the socket is meant for it.
    """
    pid, fds = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    if not fds or pid != str(os.getpid()):
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    count = int(fds)
    if count < 1:
        return None
    if count > 1:
        log.warning("socket activation passed %d fds; using the first", count)
    fd = SD_LISTEN_FDS_START
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        raise OSError(f"fd {fd} from socket activation is not a socket")
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise OSError("socket activation passed a socket that is not AF_UNIX/SOCK_STREAM")
    os.set_inheritable(fd, False)
    return sock
