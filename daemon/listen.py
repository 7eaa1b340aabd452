"""The Unix socket the daemon listens on, and who may talk to it.

trio has no Unix listener helper, so the socket is bound here: the stale file
of a previous run is removed only if it really is a socket, the mode is set
before anyone can connect, and each peer's uid is read with SO_PEERCRED.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from reverie.errors import ConfigError, ReadOnlyStorage

_UCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


def bind_unix_socket(
    path: Path, *, mode: int, group: str = "", backlog: int = 512
) -> socket.socket:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ReadOnlyStorage(f"cannot create socket dir {path.parent}: {e.strerror}") from e
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # umask makes the file 0600-or-stricter from the moment it exists,
        # so there is no window in which others could connect.
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        if group:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ConfigError(f"daemon.socket_group: no group named {group!r}") from None
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path} exists and is not a socket; refusing to remove it")
    # A live daemon would answer: its data-dir lock already stopped us if it
    # used the same data, but two data dirs must not share one socket either.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ConfigError(f"another process is listening on {path}; refusing to take it over")


def peer_credentials(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid=pid, uid=uid, gid=gid)


def allowed_uids(configured: list[int]) -> frozenset[int]:
    """Root, the daemon's own uid, and the configured ones."""
    return frozenset({0, os.getuid(), *configured})
