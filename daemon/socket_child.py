"""Helper processes on a socketpair: the search workers' and the embed worker's plumbing.

The daemon keeps one end; the child gets the other as a file descriptor
number on its command line (`pass_fds`), so nothing else inherits it: when
the daemon exits or is killed, the child's next read ends with EOF and it
exits too.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Callable


def spawn(command: list[str], *args: str) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start `command FD *args` (blocking: call from a thread in trio code); return the
    process and the daemon's end of the socket."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            [*command, str(theirs.fileno()), *args],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    return proc, mine


def child_main(
    argv: list[str],
    *,
    name: str,
    usage: str,
    serve: Callable[[socket.socket, list[str]], int],
) -> int:
    """A child's `main`: `argv` is FD and one more argument; `serve(sock, rest)`
    runs until the daemon closes its end."""
    logging.basicConfig(level=logging.WARNING, format=f"{name}: %(message)s")
    if len(argv) != 2 or not argv[0].isdigit():
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(argv[0]))
    try:
        return serve(sock, argv[1:])
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the daemon went away mid-answer
    finally:
        sock.close()
