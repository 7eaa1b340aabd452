"""`reverie doctor`: check the daemon, its files and its data, and say what to do.

Exit status: 0 when every check is ok, 1 when at least one needs attention
(warn or fail). It runs whether or not the daemon is up.
"""

from __future__ import annotations

import argparse

from reverie.rpc._cli_base import common, emit_json
from reverie.rpc.proto_doctor import DoctorCheck

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def cmd_doctor(args: argparse.Namespace) -> int:
    from reverie.rpc.doctor import run

    checks = run(args.socket, args.data_dir)
    status = _overall(checks)
    if args.json:
        emit_json({"status": status, "checks": checks})
    else:
        for c in checks:
            print(f"{_MARK[c.status]}  {c.name:<22} {c.summary}")
            if c.hint and c.status != "ok":
                print(f"      {'':<22} hint: {c.hint}")
        n = sum(c.status != "ok" for c in checks)
        print("all checks ok" if not n else f"{n} check(s) need attention")
    return 0 if status == "ok" else 1


def _overall(checks: list[DoctorCheck]) -> str:
    statuses = {c.status for c in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the daemon, socket, data dir, database, index and phases; exit 1 if any "
        "check warns or fails",
        description="Runs every check and explains each (ok, warn or fail, with a hint). "
        "Works with the daemon down: the database is then opened read-only. "
        "Exit status 0: all ok; 1: something needs attention.",
    )
    common(p)
    p.add_argument(
        "--data-dir", help="data dir to check when the daemon is down (default: the config's)"
    )
    p.set_defaults(run=cmd_doctor, needs_client=False)
