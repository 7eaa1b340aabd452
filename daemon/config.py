"""Configuration: a TOML file decoded into typed structs, plus the environment.

Precedence, highest first: command-line flags (applied by the CLI), the
environment (REVERIE_DATA_DIR, REVERIE_SOCKET, REVERIE_LOG_LEVEL), the file
named by REVERIE_CONFIG or found at $CONFIGURATION_DIRECTORY/reverie.toml
(systemd), /etc/reverie/reverie.toml (root) or
$XDG_CONFIG_HOME/reverie/reverie.toml, then the embedded defaults. No file
is needed. daemon/config_sources.py also tells where each value came from.

This module is imported by the client to find the socket: standard library
and msgspec only.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct
from reverie.errors import ConfigError
from reverie.phases.settings import DeepConfig, LightConfig, RemConfig, repr_hiding_key  # dreams

LogLevel = Literal["debug", "info", "warning", "error"]
EmbedderName = Literal["lexical", "minilm", "http"]


class DaemonConfig(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    data_dir: str = ""
    socket: str = ""
    # Octal as a string ("0600") because TOML has no octal-looking integers users expect.
    socket_mode: Annotated[str, Meta(pattern=r"^0?[0-7]{3}$")] = "0600"
    socket_group: str = ""
    allowed_uids: list[Annotated[int, Meta(ge=0)]] = []
    max_frame_bytes: Annotated[int, Meta(ge=1024, le=256 * 1024 * 1024)] = 16 * 1024 * 1024
    max_connections: Annotated[int, Meta(ge=1, le=65536)] = 256
    max_in_flight: Annotated[int, Meta(ge=1, le=4096)] = 64
    idle_timeout_s: Annotated[float, Meta(gt=0)] = 600.0
    frame_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    grace_period_s: Annotated[float, Meta(ge=0)] = 10.0
    log_level: LogLevel = "info"


class StoreConfig(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    readers: Annotated[int, Meta(ge=1, le=64)] = 4
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    # faults: cap the database size in MB (0: unlimited). Writes past it fail
    # with storage_full while reads go on; SIGHUP applies a new value.
    max_db_mb: Annotated[float, Meta(ge=0)] = 0


class EmbedderConfig(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The ``[embedder]`` section of the configuration file."""

    name: EmbedderName = "lexical"
    # lexical: the dimension to produce (0 means 384). http: the dimension the
    # server must return (0 means learn it from the first answer). minilm: 0 or 384.
    dim: Annotated[int, Meta(ge=0, le=8192)] = 0
    # Texts per model call (minilm) or per HTTP request (http).
    batch_size: Annotated[int, Meta(ge=1, le=4096)] = 64
    # minilm: the torch device, and the CPU threads torch may use (0: torch decides).
    device: str = "cpu"
    threads: Annotated[int, Meta(ge=0, le=1024)] = 0
    # http: the server's base URL (".../v1/embeddings" is appended unless present).
    url: str = ""
    model: str = ""
    # http: a bearer token, given directly or (better) by naming an environment variable.
    api_key: str = ""
    api_key_env: str = ""
    timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    retries: Annotated[int, Meta(ge=0, le=10)] = 3
    # Initial delay between retries; doubled after each failed attempt.
    backoff_s: Annotated[float, Meta(ge=0, le=60)] = 0.5

    def __repr__(self) -> str:
        return repr_hiding_key(self)  # the key must never reach a log line or a traceback

    __str__ = __repr__


class IndexConfig(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The ``[index]`` section: the HNSW graph and how often it is saved."""

    enabled: bool = True
    # Measured (store/vector_index.py): M=24/ef_construction=128 keeps every
    # vector findable under churn; ef=128 gives recall@10 1.0 at 100k, .99 at 1M
    # (on vectors with no cluster structure at all, raise ef: 512 found every one).
    m: Annotated[int, Meta(ge=4, le=128)] = 24
    ef_construction: Annotated[int, Meta(ge=16, le=2048)] = 128
    ef: Annotated[int, Meta(ge=8, le=4096)] = 128
    # Saved this often while it has unsaved changes, also in the middle of a
    # long catch-up (after the batch in progress) and while a burst defers
    # the catch-up: a restart after a crash redoes at most this much of the
    # index's work.
    save_interval_s: Annotated[float, Meta(gt=0)] = 60.0
    # While clients are being served, a save stores the new vectors in SQLite
    # but rewrites the index files at most this often (0: every save): writing
    # them stalled a 64-client load for 55-100 ms (tests/bench/bench_load.py).
    # A crash then redoes up to this much graph insertion, not embedding.
    busy_file_save_s: Annotated[float, Meta(ge=0)] = 300.0
    # Write the saved index from a forked child: hnswlib holds the GIL while it
    # writes (0.5 s at 100k vectors), which would stall the whole daemon.
    # false: write in process (also the fallback when fork is refused).
    fork_save: bool = True
    # Embed new documents (lexical embedder) in a process of its own
    # (store/embed_worker.py), off the daemon's GIL; false: in the indexer's thread.
    embed_process: bool = True
    batch: Annotated[int, Meta(ge=16, le=65536)] = 1024
    # The index yields to foreground writes: it catches up once writes pause
    # for delay_s, and at the latest max_lag_s after the first pending write.
    # During a burst (200+ new memories a second) both stretch 5x: it waits
    # for a pause of 5 * delay_s (1.25 s), at most 5 * max_lag_s (10 s).
    # Large batches also cost half as much per vector as a few at a time.
    delay_s: Annotated[float, Meta(ge=0, le=60)] = 0.25
    max_lag_s: Annotated[float, Meta(ge=0, le=600)] = 2.0


class SearchConfig(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The ``[search]`` section: how lexical and vector results are fused."""

    mode: Literal["hybrid", "lexical", "vector"] = "hybrid"
    # rrf: sum of weight / (rrf_k + rank); score: weighted sum of each side's
    # scores scaled to [0, 1]. Defaults measured on LoCoMo (README).
    fusion: Literal["rrf", "score"] = "score"
    rrf_k: Annotated[float, Meta(gt=0, le=1000)] = 60.0
    lexical_weight: Annotated[float, Meta(ge=0, le=10)] = 1.0
    vector_weight: Annotated[float, Meta(ge=0, le=10)] = 0.5
    candidates: Annotated[int, Meta(ge=10, le=2000)] = 100
    record_recalls: bool = True
    # Processes that run the SQLite half of searches (daemon/search_worker.py),
    # outside the daemon's GIL; started on the first search. 0: searches run
    # whole in the daemon's reader threads. Read at start (a reload keeps it).
    workers: Annotated[int, Meta(ge=0, le=64)] = 2


class SessionsConfig(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The ``[sessions]`` section: when a silent session counts as stale."""

    # A session silent this long is marked stale and its claims lapse
    # (decided when read; nothing is deleted).
    stale_after_s: Annotated[float, Meta(gt=0, le=30 * 86400)] = 1800.0


class EventsConfig(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The ``[events]`` section: the spool that hooks fall back on (rpc/spool.py)."""

    # "": $REVERIE_SPOOL_DIR, else <data_dir>/spool. Hooks read the same setting.
    spool_dir: str = ""
    # The spool is drained at start, then this often (0: only at start). It
    # fills only when a hook could not reach a running daemon, and an empty
    # directory costs one scandir: 5 s keeps such events searchable soon.
    spool_interval_s: Annotated[float, Meta(ge=0, le=86400)] = 5.0


# -- dreams (issue 5): checked by phases/schedule.py compile_schedules() -------
class DreamPhaseConfig(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One phase's override under ``[dreams.phases.<phase>]``."""

    cron: str = ""  # "": the preset's; "off": never scheduled
    timezone: str = ""  # "": dreams.timezone


class DreamsConfig(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The ``[dreams]`` section: when the consolidation phases run."""

    preset: Literal["core", "deep", "off"] = "core"
    timezone: str = ""  # an IANA name; "": the system's zone
    jitter_s: Annotated[float, Meta(ge=0, le=3600)] = 300.0
    # A daemon killed mid-run holds its phase's lock this long at most.
    lock_ttl_s: Annotated[float, Meta(ge=1, le=86400)] = 600.0
    # Keyed light-sleep / rem / deep-sleep (lightSleep, deepSleep accepted).
    phases: dict[str, DreamPhaseConfig] = {}
    # Plan each run in a process of its own at a low CPU priority
    # (phases/plan_worker.py), off the daemon's GIL; false: in a daemon thread.
    plan_process: bool = True
    # ... under SCHED_IDLE, so that it takes only the CPU requests leave; if it
    # starves there (a machine busy with other work), planned again at nice 10.
    plan_idle: bool = True
    # Each phase's tunables (phases/settings.py: msgspec only, cheap to import).
    light_sleep: LightConfig = msgspec.field(default_factory=LightConfig)
    rem: RemConfig = msgspec.field(default_factory=RemConfig)
    deep_sleep: DeepConfig = msgspec.field(default_factory=DeepConfig)


# -- end dreams ----------------------------------------------------------------


class Config(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    embedder: EmbedderConfig = msgspec.field(default_factory=EmbedderConfig)
    index: IndexConfig = msgspec.field(default_factory=IndexConfig)
    search: SearchConfig = msgspec.field(default_factory=SearchConfig)
    sessions: SessionsConfig = msgspec.field(default_factory=SessionsConfig)
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    dreams: DreamsConfig = msgspec.field(default_factory=DreamsConfig)  # issue 5

    @property
    def data_path(self) -> Path:
        return Path(self.daemon.data_dir or default_data_dir()).expanduser()

    @property
    def socket_path(self) -> Path:
        return Path(self.daemon.socket or default_socket()).expanduser()


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_data_dir() -> str:
    # Under systemd, StateDirectory= tells us where our state lives.
    if state := os.environ.get("STATE_DIRECTORY"):
        return state.split(":")[0]
    if os.getuid() == 0 and "XDG_STATE_HOME" not in os.environ:
        return "/var/lib/reverie"
    return str(_xdg("XDG_STATE_HOME", ".local/state") / "reverie")


def default_socket() -> str:
    if runtime := os.environ.get("RUNTIME_DIRECTORY"):
        return str(Path(runtime.split(":")[0]) / "reverie.sock")
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return str(Path(xdg) / "reverie" / "reverie.sock")
    if os.getuid() == 0:
        return "/run/reverie/reverie.sock"
    return f"/tmp/reverie-{os.getuid()}/reverie.sock"


def default_config_file() -> Path:
    # Under systemd, ConfigurationDirectory= names /etc/reverie; root without
    # XDG_CONFIG_HOME (an operator's shell) means the system service's file too,
    # as the data dir and socket do, so `reverie config check` checks that one.
    if conf := os.environ.get("CONFIGURATION_DIRECTORY"):
        return Path(conf.split(":")[0]) / "reverie.toml"
    if os.getuid() == 0 and "XDG_CONFIG_HOME" not in os.environ:
        return Path("/etc/reverie/reverie.toml")
    return _xdg("XDG_CONFIG_HOME", ".config") / "reverie" / "reverie.toml"


def config_file() -> Path | None:
    """The file to read: REVERIE_CONFIG (must exist), else the default if present."""
    named = os.environ.get("REVERIE_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"REVERIE_CONFIG names {path}, which is not a file")
        return path
    default = default_config_file()
    return default if default.is_file() else None


def parse(text: str, source: str = "<config>") -> Config:
    return parse_raw(text, source)[1]


def parse_raw(text: str, source: str = "<config>") -> tuple[dict[str, Any], Config]:
    """The file's own tables (to tell which keys it sets) and the checked Config."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from e
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        # msgspec names the key: "Object contains unknown field `x` - at `$.daemon`"
        raise ConfigError(f"{source}: {e}") from e
    if "dreams" in raw:  # dreams (issue 5): crons and zones; croniter only when needed
        from reverie.phases.schedule import compile_schedules

        try:
            compile_schedules(cfg.dreams)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e.message}") from e
    return raw, cfg


def read_raw(path: Path) -> tuple[dict[str, Any], Config]:
    """parse_raw of a file's text; ConfigError when it cannot be read."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    return parse_raw(text, str(path))


def load(path: Path | None = None, *, env: bool = True) -> Config:
    """Read the configuration file (if any) and apply environment overrides."""
    if path is None:
        path = config_file()
    cfg = Config() if path is None else read_raw(path)[1]
    if env:
        apply_env(cfg)
    return cfg


# The environment variables that override a key (REVERIE_CONFIG names the file).
ENV_KEYS = {
    "REVERIE_DATA_DIR": "daemon.data_dir",
    "REVERIE_SOCKET": "daemon.socket",
    "REVERIE_LOG_LEVEL": "daemon.log_level",
}
LOG_LEVELS = ("debug", "info", "warning", "error")


def apply_env(cfg: Config) -> dict[str, str]:
    """Apply the environment's overrides; return {dotted key: variable} for those set."""
    applied: dict[str, str] = {}
    if v := os.environ.get("REVERIE_DATA_DIR"):
        cfg.daemon.data_dir = v
        applied["daemon.data_dir"] = "REVERIE_DATA_DIR"
    if v := os.environ.get("REVERIE_SOCKET"):
        cfg.daemon.socket = v
        applied["daemon.socket"] = "REVERIE_SOCKET"
    if v := os.environ.get("REVERIE_LOG_LEVEL"):
        cfg.daemon.log_level = _log_level(v, "REVERIE_LOG_LEVEL")
        applied["daemon.log_level"] = "REVERIE_LOG_LEVEL"
    return applied


def apply_flags(
    cfg: Config,
    *,
    data_dir: str | None = None,
    socket: str | None = None,
    log_level: str | None = None,
) -> dict[str, str]:
    """Apply `reverie daemon`'s flags (they win over everything); return {key: flag}."""
    applied: dict[str, str] = {}
    if data_dir:
        cfg.daemon.data_dir = data_dir
        applied["daemon.data_dir"] = "--data-dir"
    if socket:
        cfg.daemon.socket = socket
        applied["daemon.socket"] = "--socket"
    if log_level:
        cfg.daemon.log_level = _log_level(log_level, "--log-level")
        applied["daemon.log_level"] = "--log-level"
    return applied


def _log_level(value: str, origin: str) -> LogLevel:
    if value not in LOG_LEVELS:
        raise ConfigError(f"{origin} must be debug, info, warning or error, not {value!r}")
    return value  # type: ignore[return-value]
