"""The dream phases' tunables, as the daemon config's `[dreams.*]` sub-tables.

daemon/config.py is imported by the CLI and the client, so these Structs
live here, on msgspec and the standard library only: the phases themselves
pull in apsw, the store and (REM) numpy, which `reverie --help` must not
pay for. phases/light.py and phases/deep.py import their config from here.

RemConfig mirrors phases/rem.py's RemConfig field for field (tests/
test_config.py checks the two agree); the daemon converts it to rem.py's
type when it builds the phase (phases/service.py). Lead: make rem.py import
RemConfig from here and drop the copy and the conversion.
"""

from __future__ import annotations

import msgspec


def _default_kind_weights() -> dict[str, float]:
    return {
        "decision": 1.2,
        "preference": 1.2,
        "procedure": 1.1,
        "fact": 1.1,
        "summary": 1.0,
        "digest": 1.0,
        "observation": 0.8,
    }


class LightConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Light sleep's tunables: `[dreams.light_sleep]` (phases/light.py)."""

    half_life_days: float = 14.0
    recall_scale: float = 3.0
    query_scale: float = 2.0
    w_recency: float = 0.35
    w_recall: float = 0.25
    w_queries: float = 0.15
    w_importance: float = 0.25
    kind_weights: dict[str, float] = msgspec.field(default_factory=_default_kind_weights)
    score_epsilon: float = 0.05  # rewrite a stored score only when it moved this much
    promote_min_score: float = 0.75
    promote_min_recalls: int = 3
    promote_min_queries: int = 2
    archive_max_score: float = 0.15
    archive_min_age_days: float = 30.0  # unrecalled in the store this long (not since observed)
    summarized_archive_age_days: float = 7.0  # a distilled, never-recalled observation
    protected_kinds: list[str] = msgspec.field(
        default_factory=lambda: ["decision", "preference", "procedure"]
    )
    session_idle_s: float = 1800.0
    session_min_observations: int = 2
    session_lookback_days: float = 14.0
    summary_budget_chars: int = 1200
    summary_importance: float = 0.6
    max_sessions: int = 500  # per run: bounds a run after a long outage


class DeepConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Deep sleep's tunables: `[dreams.deep_sleep]` (phases/deep.py; defaults:
    openclaw's `deep` preset gates, then retention)."""

    promote_min_score: float = 0.8  # the light-sleep score, recomputed at plan time
    promote_min_recalls: int = 3  # recall_count
    promote_min_queries: int = 3  # distinct_queries
    archive_grace_days: float = 14.0  # an archive-marked memory unseen this long is archived
    archive_max_score: float = 0.1  # or: a score below this...
    archive_min_age_days: float = 60.0  # ...and unseen this long, marks or not
    purge_forgotten_after_days: float = 90.0  # tombstones keep their text this long; 0: never
    maintenance: bool = True  # FTS optimize, PRAGMA optimize, WAL checkpoint after the ops


class RemConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """REM's tunables: `[dreams.rem]` (a copy of phases/rem.py's RemConfig)."""

    duplicate_threshold: float = 0.9
    supersede_threshold: float = 0.7
    added_fraction: float = 0.25
    min_subject_words: int = 2
    exclude_kinds: list[str] = msgspec.field(default_factory=list)
    skip_session_observations: bool = True
    incremental: bool = True
    rescan_margin_s: float = 3600.0
    block_cells: int = 16_000_000
    max_pairs: int = 200_000
    max_ops: int = 5_000
    index_k: int = 16  # with the daemon's HNSW index: neighbours asked per changed memory
    index_min_cells: int = 90_000  # exact cells a row must cost before the index is asked
