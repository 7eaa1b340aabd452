"""The configuration with each key's origin: default, file, environment or flag.

The daemon and `reverie config show` load through the same `LoadSpec`, so
what the command prints is what the daemon runs with (and what a SIGHUP
re-reads: the spec keeps the daemon's --config path and flags, which win
over the file on every reload too).

Standard library and msgspec only: `reverie config` imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from reverie.daemon import config as config_mod
from reverie.daemon.config import Config
from reverie.rpc.proto_config import ConfigShowResult, ReloadInfo

# A key whose last part matches is a secret: shown as "***" when set. By name,
# so a section added later (e.g. an LLM's api_key) is masked without a change
# here; `*_env` keys name a variable and are not secret.
_SECRET = re.compile(r"(api_key|token|password|passwd|secret)$")
MASK = "***"


def is_secret(key: str) -> bool:
    return bool(_SECRET.search(key.rsplit(".", 1)[-1]))


def mask(key: str, value: Any) -> Any:
    return MASK if value and is_secret(key) else value


@dataclass(frozen=True, slots=True)
class Flags:
    data_dir: str = ""
    socket: str = ""
    log_level: str = ""


@dataclass(frozen=True, slots=True)
class Sourced:
    config: Config
    file: Path | None
    # dotted key -> "file PATH", "env VAR" or "flag --x"; absent: the default
    sources: dict[str, str]

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """How the configuration is found: an explicit file (--config) and the flags."""

    path: Path | None = None
    flags: Flags = field(default_factory=Flags)

    def load(self) -> Config:
        return self.load_sourced().config

    def load_sourced(self) -> Sourced:
        path = self.path if self.path is not None else config_mod.config_file()
        sources: dict[str, str] = {}
        if path is None:
            cfg = Config()
        else:
            raw, cfg = config_mod.read_raw(path)
            for key in _set_keys(raw, Config):
                sources[key] = f"file {path}"
        for key, var in config_mod.apply_env(cfg).items():
            sources[key] = f"env {var}"
        f = self.flags
        applied = config_mod.apply_flags(
            cfg, data_dir=f.data_dir, socket=f.socket, log_level=f.log_level
        )
        for key, flag in applied.items():
            sources[key] = f"flag {flag}"
        return Sourced(cfg, path, sources)


def _set_keys(raw: dict[str, Any], tp: type[msgspec.Struct]) -> Iterator[str]:
    """The leaf keys a file's tables set (already validated against the structs)."""
    types = {f.name: f.type for f in msgspec.structs.fields(tp)}
    for name, value in raw.items():
        sub = types.get(name)
        if isinstance(sub, type) and issubclass(sub, msgspec.Struct) and isinstance(value, dict):
            yield from (f"{name}.{k}" for k in _set_keys(value, sub))
        else:
            yield name


def leaves(obj: msgspec.Struct, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every key, in declaration order; dicts are values."""
    for f in msgspec.structs.fields(type(obj)):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if isinstance(value, msgspec.Struct):
            yield from leaves(value, key + ".")
        else:
            yield key, value


def resolved(cfg: Config, key: str, value: Any) -> Any:
    """The value, or for "" (computed) paths what they compute to (XDG, systemd, root)."""
    if key == "daemon.data_dir" and not value:
        return str(cfg.data_path)
    if key == "daemon.socket" and not value:
        return str(cfg.socket_path)
    return value


def shown(cfg: Config) -> list[tuple[str, Any]]:
    """(dotted key, plain value) for display: paths resolved, secrets "***"."""
    return [(k, mask(k, msgspec.to_builtins(resolved(cfg, k, v)))) for k, v in leaves(cfg)]


def nest(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """{"a.b": v} pairs as {"a": {"b": v}}."""
    out: dict[str, Any] = {}
    for key, value in items:
        *tables, name = key.split(".")
        node = out
        for t in tables:
            node = node.setdefault(t, {})
        node[name] = value
    return out


def masked(cfg: Config) -> dict[str, Any]:
    """The whole configuration as plain data, secrets replaced by "***"."""
    return nest(shown(cfg))


def bad_key(message: str) -> str:
    """The dotted key a ConfigError's msgspec message names ("" when none)."""
    at = re.search(r"- at `\$((?:\.\w+|\[[^\]]*\])*)`", message)
    path = ""
    if at:
        path = re.sub(r"\[['\"]?([^\]'\"]*)['\"]?\]", r".\1", at.group(1)).lstrip(".")
    unknown = re.search(r"unknown field `([^`]+)`", message)
    if unknown:
        return f"{path}.{unknown.group(1)}" if path else unknown.group(1)
    missing = re.search(r"missing required field `([^`]+)`", message)
    if missing:
        return f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path


# -- rendering: TOML, so that `config show` output is itself a valid file -------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()  # JSON escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }"
    return toml_value(msgspec.to_builtins(value))


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def render(rows: list[tuple[str, Any, str]]) -> str:
    """[table] blocks of `key = value  # source` lines, from (dotted key, value, source)."""
    lines: list[str] = []
    table = None
    for key, value, source in rows:
        t, _, name = key.rpartition(".")
        if t != table:
            if lines:
                lines.append("")
            lines.append(f"[{t}]")
            table = t
        lines.append(f"{name} = {toml_value(value)}  # {source}")
    return "\n".join(lines) + "\n"


# -- reloading (SIGHUP): what can change while the daemon runs ------------------

# Read per request or per run, or swapped whole (embedder: re-embeds in the
# background); every other key is fixed at start (sockets, limits, the store,
# the index, the spool drainer) and is reported as needing a restart.
RELOADABLE = (
    "daemon.log_level",
    "embedder.",
    "search.",
    "sessions.",
    "dreams.",
    "store.max_db_mb",  # faults: applied to the writer connection (daemon/main.py)
)


# Inside reloadable sections, but read once at start.
RESTART_ONLY = ("search.workers",)  # load (issue 7): the worker processes' count


def reloadable(key: str) -> bool:
    if key in RESTART_ONLY:
        return False
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in RELOADABLE)


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ, in declaration order."""
    theirs = dict(leaves(new))
    return [k for k, v in leaves(old) if theirs.get(k) != v]


def copy_into(target: msgspec.Struct, source: msgspec.Struct) -> None:
    """Update a struct in place, so every holder of it sees the new values."""
    for f in msgspec.structs.fields(type(target)):
        setattr(target, f.name, getattr(source, f.name))


@dataclass(slots=True)
class RunningConfig:
    """What `config_show` reports: the daemon's config and its last reload."""

    config: Config  # the daemon's own (reloadable parts are updated in place)
    file: Path | None
    sources: dict[str, str]
    loaded_at: float
    last_reload: ReloadInfo | None = None
    pending_restart: list[str] = field(default_factory=list)

    def show(self) -> ConfigShowResult:
        return ConfigShowResult(
            config=masked(self.config),
            sources={k: self.sources.get(k, "default") for k, _ in leaves(self.config)},
            file=str(self.file) if self.file else None,
            loaded_at=self.loaded_at,
            last_reload=self.last_reload,
            pending_restart=list(self.pending_restart),
        )
