"""Who may talk to the daemon: the socket's mode, and the peer's uid (SO_PEERCRED).

The tests that need another uid run a small client as `nobody` in a child
process; they need root to switch to it, and skip otherwise.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from harness import Daemon
from reverie.rpc.protocol import PROTOCOL_VERSION, Hello, RawResponse
from wire import packed, parse_replies

_encoder = msgspec.msgpack.Encoder()
_response = msgspec.msgpack.Decoder(RawResponse)

# Standard library only: it runs as nobody, under an interpreter nobody can execute.
_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"connect": type(e).__name__, "reply": ""}))
    sys.exit(0)
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
    s.shutdown(socket.SHUT_WR)
except (BrokenPipeError, ConnectionResetError):
    pass  # refused: the daemon closed without reading; its answer may still be queued
out = b""
while True:
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    out += chunk
print(json.dumps({"connect": "ok", "reply": out.hex()}))
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the socket file ----------------------------------------------------------------------


def test_socket_is_0600_in_a_0700_directory(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    d.socket = short_tmp / "run" / "sub" / "r.sock"  # directories the daemon must create
    with d.start():
        st = d.socket.lstat()
        assert stat.S_ISSOCK(st.st_mode)
        assert mode(d.socket) == 0o600
        assert st.st_uid == os.getuid()
        assert mode(d.socket.parent) == 0o700
        assert mode(d.data_dir) == 0o700
    assert not d.socket.exists()  # removed on a clean stop


def test_socket_mode_and_group_from_the_config(short_tmp: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    d = Daemon(short_tmp, config=f'[daemon]\nsocket_mode = "0660"\nsocket_group = "{group}"\n')
    with d.start():
        assert mode(d.socket) == 0o660
        assert d.socket.stat().st_gid == os.getgid()


def test_a_stale_socket_file_is_replaced_but_a_regular_file_is_not(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    d.start()
    d.kill()  # a crash leaves the socket file behind
    assert d.socket.exists()
    with d.start():
        assert mode(d.socket) == 0o600
    d.socket.write_text("not a socket")
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) != 0
    assert "not a socket" in d.log()
    assert d.socket.read_text() == "not a socket"


# --- another uid ---------------------------------------------------------------------------


def _nobody() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user named nobody")


def _interpreter(user: pwd.struct_passwd) -> str:
    """A Python that `user` can execute (ours may live under root's 0700 home)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        try:
            if candidate and _as(user, [candidate, "-c", "pass"]).returncode == 0:
                return candidate
        except PermissionError:  # exec refused: a directory on its path is closed to user
            continue
    pytest.skip(f"no Python interpreter that {user.pw_name} can execute")


def _as(user: pwd.struct_passwd, argv: list[str]) -> subprocess.CompletedProcess[str]:
    # What `setpriv --reuid --regid --clear-groups` does, without needing setpriv.
    return subprocess.run(
        argv,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        cwd="/",
    )


class Stranger:
    """Talks to the daemon as nobody: sends bytes, returns what came back."""

    def __init__(self) -> None:
        self.user = _nobody()
        self.python = _interpreter(self.user)

    @property
    def uid(self) -> int:
        return self.user.pw_uid

    def exchange(self, socket_path: Path, data: bytes) -> tuple[str, list[RawResponse]]:
        proc = _as(self.user, [self.python, "-I", "-c", _CLIENT, str(socket_path), data.hex()])
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        return out["connect"], parse_replies(bytes.fromhex(out["reply"]))


@pytest.fixture
def stranger(short_tmp: Path) -> Stranger:
    s = Stranger()
    short_tmp.chmod(0o755)  # nobody must reach the socket's directory
    return s


HELLO_PING = packed(Hello(id=1, protocol=PROTOCOL_VERSION)) + packed({"method": "ping", "id": 2})


def test_another_uid_cannot_connect_to_a_0600_socket(short_tmp: Path, stranger: Stranger) -> None:
    with Daemon(short_tmp).start() as d:
        outcome, replies = stranger.exchange(d.socket, HELLO_PING)
        assert (outcome, replies) == ("PermissionError", [])
        with d.client() as c:
            c.ping()


def test_another_uid_is_refused_by_peer_credentials(short_tmp: Path, stranger: Stranger) -> None:
    with Daemon(short_tmp, config='[daemon]\nsocket_mode = "0666"\n').start() as d:
        outcome, replies = stranger.exchange(d.socket, HELLO_PING)
        assert outcome == "ok"
        assert len(replies) == 1, replies
        err = replies[0].error
        assert replies[0].id == 0 and err is not None and err.code == "access_denied"
        assert str(stranger.uid) in err.message
        assert f"refused connection peer_uid={stranger.uid}" in d.log()
        with d.client() as c:
            c.ping()
            assert c.status().connections == 1  # the refused one holds no slot


def test_an_allowed_uid_is_served(short_tmp: Path, stranger: Stranger) -> None:
    config = f'[daemon]\nsocket_mode = "0666"\nallowed_uids = [{stranger.uid}]\n'
    with Daemon(short_tmp, config=config).start() as d:
        remember = packed({"method": "remember", "id": 3, "content": "written by nobody"})
        outcome, replies = stranger.exchange(d.socket, HELLO_PING + remember)
        assert outcome == "ok"
        assert [(r.id, r.error) for r in replies] == [(1, None), (2, None), (3, None)]
        with d.client() as c:
            hits = c.search("nobody").hits
            assert [h.memory.content for h in hits] == ["written by nobody"]
