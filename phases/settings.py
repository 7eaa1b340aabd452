"""The dream phases' tunables, as the daemon config's `[dreams.*]` sub-tables.

daemon/config.py is imported by the CLI and the client, so these Structs
live here, on msgspec and the standard library only: the phases themselves
pull in apsw, the store and (REM) numpy, which `reverie --help` must not
pay for. phases/light.py and phases/deep.py import their config from here.

phases/rem.py imports RemConfig (and its `[dreams.rem.llm]` sub-table,
RemLlmConfig) from here: one class, documented next to its defaults.
"""

from __future__ import annotations

from typing import Annotated

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
    # memory versions (store/versions.py): per memory keep the newest N snapshots; an
    # older one is pruned (undoably) once replaced more than `versions_retention_days` ago.
    versions_keep: Annotated[int, msgspec.Meta(ge=1)] = 10
    versions_retention_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0


def repr_hiding_key(config: msgspec.Struct) -> str:
    """repr() of a config with an `api_key` field, the key shown as ***: it must
    never reach a log line, a status answer or a traceback (daemon/config.py's
    EmbedderConfig uses it too)."""
    fields = msgspec.structs.asdict(config)
    if fields["api_key"]:
        fields["api_key"] = "***"
    inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{type(config).__name__}({inner})"


class RemLlmConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`[dreams.rem.llm]`: an OpenAI-compatible chat endpoint that writes REM's
    cluster summaries (phases/llm.py). Off while `url` is empty; any failure
    falls back to the deterministic summary (noted in the run's notes)."""

    url: str = ""  # base URL; ".../v1/chat/completions" is appended unless present
    model: str = ""
    api_key: str = ""  # a bearer token; better: name an environment variable
    api_key_env: str = ""
    timeout_s: float = 30.0  # per call (no retry: the fallback is the retry)
    max_calls: int = 20  # per run
    max_tokens: int = 20_000  # per run, prompt + completion (the usage answered, else ~chars/4)
    max_completion_tokens: int = 400  # per call (the request's max_tokens)
    temperature: float = 0.0

    def __repr__(self) -> str:
        return repr_hiding_key(self)

    __str__ = __repr__


class RemConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """REM's tunables: `[dreams.rem]` (phases/rem.py, phases/rem_clusters.py).

    The defaults were measured on tests/test_dream_rem.py's planted store.
    """

    # Cosine for a duplicate candidate. Lexical-embedder vectors of a text and
    # its copy with a case/punctuation edit or one added word score >= 0.9;
    # the lexical check, not the cosine, is what tells facts apart.
    duplicate_threshold: float = 0.9
    # Cosine for a supersession candidate: a changed value removes that value's
    # word feature (numbers carry no character n-grams), so such pairs sit lower.
    supersede_threshold: float = 0.7
    added_fraction: float = 0.25  # added words a duplicate may have, of the union
    min_subject_words: int = 2  # content words a supersession's subject needs
    exclude_kinds: list[str] = msgspec.field(default_factory=list)
    # Hook observations (metadata.session_id) are raw session records that light
    # sleep distils per session: merging them across sessions would break that.
    skip_session_observations: bool = True
    incremental: bool = True  # compare only memories changed since the last REM run
    # Similarity cells per block (64 MB of float32): at 100k, 160-row blocks run
    # OpenBLAS at ~200 GFLOP/s on 2 cores against ~170 for 80 rows, ~110 for 40.
    block_cells: int = 16_000_000
    max_pairs: int = 200_000  # candidate pairs per run (the rest waits for the next run)
    max_ops: int = 5_000  # ops per run: bounds a run's undo and the writer's work
    # With the daemon's index: neighbours asked per changed memory (grown 4x
    # while the k-th is still above the thresholds), and the exact cells a
    # changed memory's row must cost before a query is cheaper (one query at
    # ef=128, ~0.4 ms on 2 threads, costs as much as ~90k exact cells at ~4.4 ns).
    index_k: int = 16
    index_min_cells: int = 90_000
    # Cluster summaries (phases/rem_clusters.py): related memories (cosine >=
    # cluster_threshold, sharing content words) of a workspace form a cluster;
    # one of cluster_min_size..cluster_max_size memories gets a `summary`.
    cluster_summaries: bool = True
    cluster_threshold: float = 0.6
    cluster_min_shared_words: int = 2  # content words a related pair shares...
    cluster_min_jaccard: float = 0.3  # ...and that share of their union
    cluster_min_size: int = 3
    cluster_max_size: int = 24  # larger components are left alone (noted): too vague
    max_summaries: int = 100  # cluster summaries per run
    summary_budget_chars: int = 1200
    summary_importance: float = 0.4
    digest: bool = True  # one `digest` memory per applied run that changed something
    llm: RemLlmConfig = msgspec.field(default_factory=RemLlmConfig)
