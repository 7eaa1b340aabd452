"""Protocol of `reverie doctor`: the daemon's own view of its health.

The CLI adds what only it can see (can it reach the daemon, the socket's
permissions, the hooks' spool) and, when the daemon is down, runs the same
database checks itself, read-only (rpc/doctor.py).
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct
from reverie.rpc._base import _Request

CheckStatus = Literal["ok", "warn", "fail"]


class Doctor(_Request, tag="doctor"):
    """Run the daemon-side checks (data dir, schema, quick_check, index, embedder, phases)."""


class DoctorCheck(Struct, kw_only=True, omit_defaults=True):
    name: str  # stable, for scripts: "schema", "quick_check", "index", ...
    status: CheckStatus
    summary: str  # one line: what was found
    hint: str = ""  # what to do about it (empty when nothing needs doing)


class DoctorResult(Struct, kw_only=True):
    checks: list[DoctorCheck]
