"""Protocol for episodes: a task's run from start to outcome, step by step.

An agent starts an episode for a task (description, context, task type),
logs each step it takes (tool, action, parameters, success or error,
latency), and completes it with an outcome. The daemon scores the episode
(store/reward.py) and makes it findable, so that the next similar task can
start from what worked before.

Hot path for hooks: msgspec and the standard library only.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct
from reverie.rpc._base import DEFAULT_WORKSPACE, SQLITE_MAX_INT, Tag, Workspace, _Request

EpisodeId = Annotated[int, Meta(ge=1, le=SQLITE_MAX_INT)]
EpisodeOutcome = Literal["success", "partial", "failure"]
# Free-form but regular, so that filters match: code_generation, debugging,
# refactoring, testing, analysis, documentation, other, ...
TaskType = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="task type")]
Description = Annotated[str, Meta(min_length=1, max_length=10_000)]
Name = Annotated[str, Meta(max_length=200)]
# Long step texts are accepted and trimmed when stored, never rejected.
StepText = Annotated[str, Meta(max_length=1_000_000)]
SessionId = Annotated[str, Meta(min_length=1, max_length=200)]
Limit = Annotated[int, Meta(ge=1, le=1000)]


class EpisodeContext(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """What the task is about; used to match similar episodes."""

    language: Name = ""
    framework: Name = ""
    domain: Name = ""
    tags: Annotated[list[Tag], Meta(max_length=32)] = []


# --- requests --------------------------------------------------------------


class StartEpisode(_Request, tag="start_episode"):
    description: Description
    workspace: Workspace = DEFAULT_WORKSPACE
    context: EpisodeContext = msgspec.field(default_factory=EpisodeContext)
    task_type: TaskType = "other"
    session_id: SessionId | None = None


class LogStep(_Request, tag="log_step"):
    """One step of an open episode; steps are numbered 1, 2, ... in arrival order.

    A step failed when ``success`` is false or ``error`` is not empty.
    """

    episode_id: EpisodeId
    tool: Annotated[str, Meta(min_length=1, max_length=200)]
    action: Annotated[str, Meta(max_length=10_000)] = ""
    parameters: dict[str, Any] = {}
    success: bool = True
    result: StepText = ""
    error: StepText = ""
    # Bounded (about 31 years) so that an episode's total cannot overflow.
    latency_ms: Annotated[int, Meta(ge=0, le=10**12)] = 0


class CompleteEpisode(_Request, tag="complete_episode"):
    episode_id: EpisodeId
    outcome: EpisodeOutcome
    notes: Annotated[str, Meta(max_length=10_000)] = ""


class GetEpisode(_Request, tag="get_episode"):
    episode_id: EpisodeId


class ListEpisodes(_Request, tag="list_episodes"):
    """Most recent first; page with ``before_id`` (the last id of the previous page)."""

    workspace: Workspace | None = None
    # "open": not completed yet; an outcome: completed with it.
    status: Literal["open", "completed"] | None = None
    outcome: EpisodeOutcome | None = None
    task_type: TaskType | None = None
    session_id: SessionId | None = None
    limit: Limit = 20
    before_id: EpisodeId | None = None


class SimilarEpisodes(_Request, tag="similar_episodes"):
    """Completed episodes like a new task, best first (ranking: store/episodes.py)."""

    description: Description
    context: EpisodeContext = msgspec.field(default_factory=EpisodeContext)
    task_type: TaskType | None = None
    workspace: Workspace | None = None
    outcomes: Annotated[list[EpisodeOutcome], Meta(max_length=3)] = []  # empty: all
    limit: Annotated[int, Meta(ge=1, le=100)] = 5


# --- results ---------------------------------------------------------------


class EpisodeStarted(Struct, kw_only=True):
    id: int
    workspace: str
    started_at: dt.datetime


class StepLogged(Struct, kw_only=True):
    episode_id: int
    n: int  # the step's number in its episode


class Reward(Struct, kw_only=True):
    """The reward and how it was made (formula: store/reward.py)."""

    value: float  # in [0, 1]
    base: float  # from the outcome: 1, 0.5 or 0
    error_penalty: float
    step_penalty: float
    latency_penalty: float


class EpisodeStep(Struct, kw_only=True):
    n: int
    tool: str
    action: str
    parameters: dict[str, Any]
    success: bool
    result: str
    error: str
    latency_ms: int
    at: dt.datetime


class EpisodeSummary(Struct, kw_only=True):
    id: int
    workspace: str
    session_id: str | None
    description: str
    task_type: str
    context: EpisodeContext
    started_at: dt.datetime
    completed_at: dt.datetime | None
    outcome: EpisodeOutcome | None  # None while open
    notes: str
    reward: float | None
    step_count: int
    error_count: int
    latency_ms: int  # the steps' total


class Episode(EpisodeSummary, kw_only=True):
    reward_detail: Reward | None
    memory_id: int | None  # the `episode` memory written on completion
    steps: list[EpisodeStep]


class EpisodeList(Struct, kw_only=True):
    episodes: list[EpisodeSummary]
    next_before_id: int | None


class SimilarEpisode(Struct, kw_only=True):
    episode: EpisodeSummary
    score: float  # relevance x reward factor x context factor
    relevance: float  # the search's score, scaled by the best candidate's: (0, 1]
    # Share of the query's context (language, framework, domain, tags, task
    # type) the episode matches, in [0, 1]; None when the query names none.
    context_overlap: float | None
    worked: list[str]  # "tool: action" of the successful steps, in order, deduplicated
    failed: list[str]  # "tool: action: error" of the failed steps


class SimilarEpisodesResult(Struct, kw_only=True):
    matches: list[SimilarEpisode]
    mode: str  # the search mode actually used
    notes: list[str] = []
