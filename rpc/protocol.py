"""The wire protocol: one msgspec Struct per request and per result.

A request is a msgpack map tagged by its ``method`` field, so the whole set
forms one tagged union that msgspec decodes and validates in a single pass::

    {"method": "remember", "id": 7, "content": "...", "kind": "fact"}

A response carries the request's ``id`` and either ``result`` or ``error``.
Requests on one connection may be pipelined; responses can arrive in any order
and are matched by ``id``.

This module is imported by the client on the hooks' hot path: it must only
import msgspec and the standard library.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, TypeAlias

import msgspec
from msgspec import Meta, Struct
from reverie.rpc._base import (
    DEFAULT_WORKSPACE,
    PROTOCOL_VERSION,
    SQLITE_MAX_INT,
    Content,
    Importance,
    Kind,
    Limit,
    MemoryId,
    State,
    Tag,
    Tier,
    Workspace,
    _Request,
)
from reverie.rpc.proto_backup import (  # backup (issue 6)
    Backup,
    BackupProgress,
    BackupProgressResult,
    BackupResult,
)
from reverie.rpc.proto_config import ConfigShow, ConfigShowResult  # config (issue 6)
from reverie.rpc.proto_doctor import Doctor, DoctorResult  # doctor (issue 6)
from reverie.rpc.proto_dreams import (  # dreams
    DreamsRun,
    DreamsRunResult,
    DreamsStatus,
    DreamsStatusResult,
    DreamsUndo,
    UndoReport,
)
from reverie.rpc.proto_episodes import (
    CompleteEpisode,
    Episode,
    EpisodeList,
    EpisodeStarted,
    GetEpisode,
    ListEpisodes,
    LogStep,
    SimilarEpisodes,
    SimilarEpisodesResult,
    StartEpisode,
    StepLogged,
)
from reverie.rpc.proto_events import (
    Capture,
    CaptureResult,
    ListEvents,
    ListEventsResult,
    PostEvents,
    PostEventsResult,
)
from reverie.rpc.proto_metrics import Metrics, MetricsResult, MetricsSummary  # metrics
from reverie.rpc.proto_sessions import (
    Brief,
    BriefResult,
    Claim,
    ClaimResult,
    Claims,
    ClaimsResult,
    Release,
    ReleaseResult,
    SessionEnd,
    SessionGet,
    SessionHeartbeat,
    SessionInfo,
    SessionList,
    SessionListResult,
    SessionLog,
    SessionLogEntry,
    SessionLogs,
    SessionLogsResult,
    SessionStart,
    SessionStartResult,
    Sitrep,
    SitrepResult,
    WorldGet,
    WorldSet,
    WorldState,
)
from reverie.rpc.proto_versions import (  # memory versions
    Update,
    UpdateResult,
    Versions,
    VersionsResult,
)

# Re-exported: clients and tests import these from here.
__all__ = ["DEFAULT_WORKSPACE", "PROTOCOL_VERSION", "SQLITE_MAX_INT", "_Request"]

# --- requests --------------------------------------------------------------


class Hello(_Request, tag="hello"):
    """First exchange on a connection: states the protocol version."""

    protocol: int
    client: Annotated[str, Meta(max_length=128)] = ""


class Ping(_Request, tag="ping"):
    """A no-op, for liveness checks and round-trip measurements."""


class Status(_Request, tag="status"):
    pass


class Remember(_Request, tag="remember"):
    content: Content
    workspace: Workspace = DEFAULT_WORKSPACE
    kind: Kind = "observation"
    tags: Annotated[list[Tag], Meta(max_length=64)] = []
    importance: Importance = 0.5
    tier: Tier = "short"
    metadata: dict[str, Any] = {}
    observed_at: dt.datetime | None = None


class Get(_Request, tag="get"):
    memory_id: MemoryId


class Forget(_Request, tag="forget"):
    memory_id: MemoryId
    purge: bool = False
    reason: Annotated[str, Meta(max_length=1024)] = ""


Mode = Literal["hybrid", "lexical", "vector"]
Boost = Annotated[float, Meta(ge=0.0, le=10.0)]


class Search(_Request, tag="search"):
    query: Annotated[str, Meta(max_length=10_000)]
    workspace: Workspace | None = None
    limit: Limit = 10
    # None: the daemon's configured default ([search] mode, normally hybrid).
    mode: Mode | None = None
    kinds: Annotated[list[Kind], Meta(max_length=32)] = []
    # A memory must carry every tag listed.
    tags: Annotated[list[Tag], Meta(max_length=32)] = []
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    include_archived: bool = False
    # Multiply scores by (1 + boost * x), x in [0, 1]: recency (30-day
    # half-life on observed_at) and importance.
    recency_boost: Boost = 0.0
    importance_boost: Boost = 0.0
    explain: bool = False


class Export(_Request, tag="export"):
    workspace: Workspace | None = None
    after_id: Annotated[int, Meta(ge=0, le=SQLITE_MAX_INT)] = 0
    limit: Limit = 500
    include_forgotten: bool = False


class MemoryRecord(Struct, forbid_unknown_fields=True, kw_only=True):
    """A memory in its portable form (export/import): references are uids."""

    uid: Annotated[str, Meta(min_length=1, max_length=64)]
    workspace: Workspace
    kind: Kind
    content: Annotated[str, Meta(max_length=1_000_000)]
    tags: list[Tag] = []
    importance: Importance = 0.5
    tier: Tier = "short"
    state: State = "active"
    superseded_by: str | None = None
    provenance: dict[str, Any] = {}
    created_at: dt.datetime
    observed_at: dt.datetime
    updated_at: dt.datetime
    last_recalled_at: dt.datetime | None = None
    recall_count: Annotated[int, Meta(ge=0, le=SQLITE_MAX_INT)] = 0
    distinct_queries: Annotated[int, Meta(ge=0, le=SQLITE_MAX_INT)] = 0
    content_hash: str = ""
    metadata: dict[str, Any] = {}


class Import(_Request, tag="import"):
    records: Annotated[list[MemoryRecord], Meta(max_length=10_000)]


Request: TypeAlias = (
    Hello | Ping | Status | Remember | Get | Forget | Search | Export | Import
    # -- events (rpc/proto_events.py)
    | PostEvents
    | ListEvents
    | Capture
    # -- sessions, world state, claims, sitrep, brief (rpc/proto_sessions.py)
    | SessionStart
    | SessionHeartbeat
    | SessionEnd
    | SessionGet
    | SessionList
    | SessionLog
    | SessionLogs
    | WorldGet
    | WorldSet
    | Claim
    | Release
    | Claims
    | Sitrep
    | Brief
    # -- episodes (rpc/proto_episodes.py)
    | StartEpisode
    | LogStep
    | CompleteEpisode
    | GetEpisode
    | ListEpisodes
    | SimilarEpisodes
    # -- dreams (rpc/proto_dreams.py)
    | DreamsRun
    | DreamsUndo
    | DreamsStatus
    # -- config (rpc/proto_config.py)
    | ConfigShow
    # -- metrics (rpc/proto_metrics.py)
    | Metrics
    # -- memory versions (rpc/proto_versions.py)
    | Update
    | Versions
    # -- backup, doctor (rpc/proto_backup.py, rpc/proto_doctor.py)
    | Backup
    | BackupProgress
    | Doctor
)


# --- results ---------------------------------------------------------------


class HelloResult(Struct, kw_only=True):
    protocol: int
    server: str
    max_frame: int


class Pong(Struct, kw_only=True):
    pass


class IndexStatus(Struct, kw_only=True):
    phase: str  # starting, rebuilding, ready, failed, off
    model: str
    vectors: int
    indexed_seq: int
    pending: int  # changes not yet in the vector index
    done: int = 0  # rebuild progress
    total: int = 0
    message: str = ""
    # Small workspaces' own indexes (store/scoped_index.py): built, and still to build.
    workspace_indexes: int = 0
    workspace_indexes_pending: int = 0
    # The global graph's slots: vectors plus deleted ones (deep sleep compacts them).
    slots: int = 0


class StatusResult(Struct, kw_only=True):
    version: str
    pid: int
    uptime_s: float
    data_dir: str
    socket: str
    database: str
    db_bytes: int
    schema_version: int
    memories: dict[str, int]
    workspaces: int
    connections: int
    socket_activated: bool
    index: IndexStatus | None = None
    # Group commit: transactions committed and the writes they carried.
    commits: int = 0
    writes: int = 0
    metrics: MetricsSummary | None = None  # metrics: the short form of `metrics`


class Memory(Struct, kw_only=True):
    id: int
    uid: str
    workspace: str
    kind: str
    content: str
    tags: list[str]
    importance: float
    tier: Tier
    state: State
    superseded_by: int | None
    provenance: dict[str, Any]
    created_at: dt.datetime
    observed_at: dt.datetime
    updated_at: dt.datetime
    last_recalled_at: dt.datetime | None
    recall_count: int
    distinct_queries: int
    content_hash: str
    metadata: dict[str, Any]


class RememberResult(Struct, kw_only=True):
    id: int
    created: bool


class ForgetResult(Struct, kw_only=True):
    id: int
    state: State
    purged: bool


class Explain(Struct, kw_only=True, omit_defaults=True):
    """How a hit was ranked: each component's rank (1-based) and score."""

    lexical_rank: int | None = None
    lexical_score: float | None = None  # BM25 (higher is better), date boost included
    vector_rank: int | None = None
    vector_score: float | None = None  # cosine similarity
    fused: float = 0.0  # the fusion score before context and boosts
    neighbour: float = 0.0  # score received from neighbouring memories
    boost: float = 1.0  # recency and importance multiplier


class Hit(Struct, kw_only=True, omit_defaults=True):
    memory: Memory
    score: float
    explain: Explain | None = None


class SearchResult(Struct, kw_only=True):
    hits: list[Hit]
    mode: Mode = "lexical"  # the mode actually used
    notes: list[str] = []  # e.g. why a hybrid search fell back to lexical


class ExportResult(Struct, kw_only=True):
    records: list[MemoryRecord]
    next_after_id: int | None


class ImportResult(Struct, kw_only=True):
    added: int
    skipped: int


Result: TypeAlias = (
    HelloResult
    | Pong
    | StatusResult
    | RememberResult
    | Memory
    | ForgetResult
    | SearchResult
    | ExportResult
    | ImportResult
    # -- events (rpc/proto_events.py)
    | PostEventsResult
    | ListEventsResult
    | CaptureResult
    # -- sessions, world state, claims, sitrep, brief (rpc/proto_sessions.py)
    | SessionStartResult
    | SessionInfo
    | SessionListResult
    | SessionLogEntry
    | SessionLogsResult
    | WorldState
    | ClaimResult
    | ReleaseResult
    | ClaimsResult
    | SitrepResult
    | BriefResult
    # -- episodes (rpc/proto_episodes.py)
    | EpisodeStarted
    | StepLogged
    | Episode
    | EpisodeList
    | SimilarEpisodesResult
    # -- dreams (rpc/proto_dreams.py)
    | DreamsRunResult
    | UndoReport
    | DreamsStatusResult
    # -- config (rpc/proto_config.py)
    | ConfigShowResult
    # -- metrics (rpc/proto_metrics.py)
    | MetricsResult
    # -- memory versions (rpc/proto_versions.py)
    | UpdateResult
    | VersionsResult
    # -- backup, doctor (rpc/proto_backup.py, rpc/proto_doctor.py)
    | BackupResult
    | BackupProgressResult
    | DoctorResult
)

# Which result type each request expects: the client decodes with it.
RESULT_TYPES: dict[type[_Request], type[Struct]] = {
    Hello: HelloResult,
    Ping: Pong,
    Status: StatusResult,
    Remember: RememberResult,
    Get: Memory,
    Forget: ForgetResult,
    Search: SearchResult,
    Export: ExportResult,
    Import: ImportResult,
    # -- events (rpc/proto_events.py)
    PostEvents: PostEventsResult,
    ListEvents: ListEventsResult,
    Capture: CaptureResult,
    # -- sessions, world state, claims, sitrep, brief (rpc/proto_sessions.py)
    SessionStart: SessionStartResult,
    SessionHeartbeat: SessionInfo,
    SessionEnd: SessionInfo,
    SessionGet: SessionInfo,
    SessionList: SessionListResult,
    SessionLog: SessionLogEntry,
    SessionLogs: SessionLogsResult,
    WorldGet: WorldState,
    WorldSet: WorldState,
    Claim: ClaimResult,
    Release: ReleaseResult,
    Claims: ClaimsResult,
    Sitrep: SitrepResult,
    Brief: BriefResult,
    # -- episodes (rpc/proto_episodes.py)
    StartEpisode: EpisodeStarted,
    LogStep: StepLogged,
    CompleteEpisode: Episode,
    GetEpisode: Episode,
    ListEpisodes: EpisodeList,
    SimilarEpisodes: SimilarEpisodesResult,
    # -- dreams (rpc/proto_dreams.py)
    DreamsRun: DreamsRunResult,
    DreamsUndo: UndoReport,
    DreamsStatus: DreamsStatusResult,
    # -- config (rpc/proto_config.py)
    ConfigShow: ConfigShowResult,
    # -- metrics (rpc/proto_metrics.py)
    Metrics: MetricsResult,
    # -- memory versions (rpc/proto_versions.py)
    Update: UpdateResult,
    Versions: VersionsResult,
    # -- backup, doctor (rpc/proto_backup.py, rpc/proto_doctor.py)
    Backup: BackupResult,
    BackupProgress: BackupProgressResult,
    Doctor: DoctorResult,
}

METHOD_NAMES: frozenset[str] = frozenset(str(cls.__struct_config__.tag) for cls in RESULT_TYPES)


# --- envelopes ---------------------------------------------------------------


class ErrorBody(Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    data: dict[str, Any] | None = None


class Response(Struct, kw_only=True, omit_defaults=True):
    """What the daemon sends. ``result`` is one of the Result structs."""

    id: int
    result: Any = None
    error: ErrorBody | None = None


class RawResponse(Struct, kw_only=True):
    """What the client decodes first: the result stays raw until its type is known."""

    id: int
    result: msgspec.Raw = msgspec.Raw(b"")
    error: ErrorBody | None = None


class Envelope(Struct):
    """A lenient view of a request, used only to answer one that failed to validate."""

    id: Any = 0
    method: Any = ""


def method_name(request: _Request) -> str:
    return str(type(request).__struct_config__.tag)
