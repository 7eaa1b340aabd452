"""A dream phase's planning in a process of its own, at a low CPU priority.

    python -m reverie.phases.plan_worker [--idle] DB_PATH    (started by phases/service.py)

Planning only reads (phases/runner.py), and it is the heavy part of a run:
REM's blocked cosine over a workspace's vectors, light sleep's scoring of
every memory, in Python and BLAS. Inside the daemon that work shared the
GIL and the cores with the requests, which waited for it (a REM run under
64 clients: write p99 150 ms, search 180 ms). Here it runs with its own
GIL, its own read-only connection, and `nice` 10 (with --idle also
SCHED_IDLE: phases/plan_priority.py), so the kernel gives the daemon and its
search workers the cores first; it takes longer while they are busy, and
nothing else.

Protocol: one msgpack `PlanRequest` on stdin, one msgpack `PlanAnswer` (a
`Plan` or a `PlanFailed`) on stdout, exit 0. Killed (SIGTERM/SIGKILL) when the daemon
stops or the run is cancelled: it wrote nothing, so there is nothing to undo.
REM plans here with its exact comparison, never the daemon's HNSW index
(that lives in the daemon): the same pairs (phases/rem_pairs.py), and the
exact path is the one REM takes below ~90k memories a workspace anyway.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import msgspec
from msgspec import Struct
from reverie.daemon.config import DreamsConfig
from reverie.phases.plan_priority import NICENESS, lower
from reverie.phases.runner import Plan

log = logging.getLogger("reverie.plan_worker")

__all__ = ["NICENESS", "PlanAnswer", "PlanFailed", "PlanRequest", "main", "plan"]


class PlanRequest(Struct, kw_only=True):
    phase: str  # canonical: light-sleep, rem, deep-sleep
    now: float
    dreams: DreamsConfig


class PlanFailed(Struct, kw_only=True):
    code: str
    message: str


class PlanAnswer(Struct, kw_only=True):
    """Exactly one of the two."""

    plan: Plan | None = None
    failed: PlanFailed | None = None


def plan(db_path: Path, req: PlanRequest) -> Plan | PlanFailed:
    from reverie.errors import ReverieError
    from reverie.phases.deep import DeepSleep
    from reverie.phases.light import LightSleep
    from reverie.phases.rem import Rem
    from reverie.store.connection import map_error, open_connection

    cfg = req.dreams
    impl: LightSleep | Rem | DeepSleep
    match req.phase:
        case "light-sleep":
            impl = LightSleep(cfg.light_sleep)
        case "rem":
            impl = Rem(cfg.rem)  # no index: the exact comparison
        case "deep-sleep":
            impl = DeepSleep(cfg.deep_sleep, light=cfg.light_sleep)
        case _:
            return PlanFailed(code="invalid_params", message=f"unknown phase {req.phase!r}")
    try:
        conn = open_connection(db_path, readonly=True)
        try:
            return impl.plan(conn, req.now)
        finally:
            conn.close()
    except ReverieError as e:
        return PlanFailed(code=e.code, message=e.message)
    except Exception as e:  # apsw errors, and bugs (logged: the daemon plans in-process)
        import apsw

        if isinstance(e, apsw.Error):
            err = map_error(e, "planning failed")
            return PlanFailed(code=err.code, message=err.message)
        log.exception("planning failed")
        return PlanFailed(code="internal", message=f"planning failed: {type(e).__name__}: {e}")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="plan_worker: %(message)s")
    idle = argv[:1] == ["--idle"]
    args = argv[1:] if idle else argv
    if len(args) != 1:
        print("usage: python -m reverie.phases.plan_worker [--idle] DB_PATH", file=sys.stderr)
        return 2
    lower(idle=idle)  # first: the request may take a while to come
    req = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=PlanRequest)
    out = plan(Path(args[0]), req)
    answer = PlanAnswer(failed=out) if isinstance(out, PlanFailed) else PlanAnswer(plan=out)
    try:
        sys.stdout.buffer.write(msgspec.msgpack.encode(answer))
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # The daemon went away (killed, or stopped mid-plan): nobody to answer.
        # Point stdout at /dev/null so that the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
