"""The dream phases' names, in the one spelling the ledger, the locks and the schedule use."""

from __future__ import annotations

import re

from reverie.errors import InvalidParams

PHASES: tuple[str, ...] = ("light-sleep", "rem", "deep-sleep")


def normalize_phase(name: str) -> str:
    """`lightSleep`, `light_sleep`, `Light-Sleep` -> `light-sleep`; unknown names refused."""
    canonical = re.sub(r"(?<=[a-z])(?=[A-Z])", "-", name.strip()).lower().replace("_", "-")
    if canonical not in PHASES:
        raise InvalidParams(f"unknown phase {name!r}: expected one of {', '.join(PHASES)}")
    return canonical
