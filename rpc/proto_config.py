"""The daemon's running configuration over RPC (`config_show`).

`reverie config show` computes the effective configuration client-side; this
asks the daemon what it actually runs with: the values (secrets masked), the
file it read, when it last reloaded (SIGHUP) and how that went, and the keys
that changed in the file but wait for a restart.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct
from reverie.rpc._base import _Request


class ConfigShow(_Request, tag="config_show"):
    """The daemon's running configuration and its last reload."""


class ReloadInfo(Struct, kw_only=True):
    at: float  # unix time
    ok: bool
    error: str = ""  # why the reload was refused (the running config was kept)
    applied: list[str] = []  # dotted keys that took effect
    needs_restart: list[str] = []  # dotted keys that differ from the running ones


class ConfigShowResult(Struct, kw_only=True):
    config: dict[str, Any]  # sections -> keys -> values; secrets are "***"
    sources: dict[str, str]  # dotted key -> "file PATH" / "env VAR" / "flag --x"; absent: default
    file: str | None  # the config file read at start or last reload
    loaded_at: float  # unix time the running config was loaded (start or reload)
    last_reload: ReloadInfo | None
    pending_restart: list[str]  # keys whose new value waits for a restart
