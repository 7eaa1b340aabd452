"""The Unix socket the daemon listens on, and who may talk to it.

trio has no Unix listener helper, so the socket is bound here: the stale file
of a previous run is removed only if it really is a socket, the mode is set
before anyone can connect, and each peer's uid is read with SO_PEERCRED.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import stat
import struct
from array import array
from dataclasses import dataclass
from pathlib import Path

from reverie.errors import ConfigError, ReadOnlyStorage

_UCRED = struct.Struct("3i")
# Linux's SO_PEERGROUPS (4.13+): the peer's supplementary groups. Python names
# no constant for it.
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


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
    _check_socket_dir(path.parent)
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


def _check_socket_dir(d: Path) -> None:
    """Refuse a directory in which someone else could replace our socket.

    /tmp/reverie-UID (the default without XDG_RUNTIME_DIR) may have been made
    by another user before us: mkdir(exist_ok=True) would then put the socket
    where they can swap it for their own and read what clients send.
    """
    st = d.stat()
    if st.st_uid not in (0, os.getuid()):
        raise ConfigError(
            f"socket dir {d} belongs to uid {st.st_uid}, not to uid {os.getuid()} or root: "
            "its owner could replace the socket; choose another daemon.socket"
        )
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"socket dir {d} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            "anyone could replace the socket; chmod go-w it or choose another daemon.socket"
        )


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


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """The peer's supplementary groups as they were when it connected."""
    size = 64 * 4
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, size)
        except OSError as e:
            if e.errno == errno.ERANGE and size < 65536 * 4:
                size = 65536 * 4  # NGROUPS_MAX
                continue
            return frozenset()  # an older kernel: the primary gid alone decides
        return frozenset(array("I", raw[: len(raw) // 4 * 4]))


@dataclass(frozen=True, slots=True)
class Access:
    """Who the daemon answers: uids, and the members of `daemon.socket_group`.

    The group is checked here too, not only by the socket file's mode: a
    socket handed over by systemd, or one whose mode an operator widened,
    must not let in more than the configuration names.
    """

    uids: frozenset[int]
    gid: int | None = None

    def admits(self, peer: Peer, sock: socket.socket) -> bool:
        if peer.uid in self.uids:
            return True
        if self.gid is None:
            return False
        return peer.gid == self.gid or self.gid in peer_groups(sock)


def allowed_uids(configured: list[int]) -> frozenset[int]:
    """Root, the daemon's own uid, and the configured ones."""
    return frozenset({0, os.getuid(), *configured})


def access(configured: list[int], group: str = "") -> Access:
    """allowed_uids, plus whoever is in `group` (daemon.socket_group) if one is named."""
    if not group:
        return Access(allowed_uids(configured))
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"daemon.socket_group: no group named {group!r}") from None
    return Access(allowed_uids(configured), gid)
