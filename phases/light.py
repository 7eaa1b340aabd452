"""Light sleep: score every active memory, mark tier candidates, summarize sessions.

Light sleep runs often and must be cheap and safe, so it changes *marks*,
not what retrieval sees:

* Score. Every active memory gets a value score in [0, 1]:

      age      = now - max(observed_at, last_recalled_at)
      recency  = 0.5 ** (age / half_life)
      recall   = 1 - exp(-recall_count / recall_scale)        (saturating)
      queries  = 1 - exp(-distinct_queries / query_scale)     (saturating)
      base     = (w_recency*recency + w_recall*recall + w_queries*queries
                  + w_importance*importance) / (sum of the weights)
      score    = min(1, base * kind_weight[kind])

  It is stored under `metadata.dream` as {"score", "candidate", "reason"},
  rewritten only when the score moved by `score_epsilon` or the candidate
  changed: a run over a quiet store writes (and re-indexes) nothing.

* Tiers. Light sleep moves no tier. It marks candidates, and deep sleep
  acts on them with its own, stricter thresholds (openclaw's promotion
  gates): `promote` for a short-term memory with a high score that was
  recalled often by several distinct queries; `archive` for a stale
  low-value memory (never a protected kind or a pinned memory), and for a
  raw observation already distilled into a session summary and never
  recalled since. Moving tiers here would make retrieval flicker with every
  run; a mark is free to revise at the next run.

  Staleness is counted in the store, not in the world: `stale_days` is the
  time since max(created_at, last_recalled_at), i.e. since the memory
  entered the store or was last useful. The score's recency keeps
  observed_at (an old event is less relevant), but an archive decision on
  observed_at alone would archive a freshly imported history (a chat log
  from 2023, never recalled yet because it just arrived) on its first
  run, before anyone had a chance to search it.

* Sessions. Short-term observations of a session (metadata.session_id) not
  yet summarized are grouped by (workspace, session); once the session is
  over (a SessionEnd observation, or quiet for `session_idle_s`) they are
  distilled into one deterministic `summary` memory whose provenance lists
  every source, and each source is marked `summarized_by` so the next run
  skips it.

The plan is a pure function of the database and `now`: ops come in memory
id order, then sessions in (workspace, session) order.
"""

from __future__ import annotations

import json
import math
from typing import Any

import apsw
from reverie.phases.cancel import NEVER, Cancel
from reverie.phases.ops import CreateSummary, Op, SetMeta
from reverie.phases.runner import Plan
from reverie.phases.session_summary import Observation, summarize
from reverie.phases.settings import LightConfig as LightConfig  # on the CLI's import path

DAY = 86400.0
SCORE_KEY = "dream"


def score(cfg: LightConfig, now: float, row: tuple[Any, ...]) -> float:
    """The value score of one memory row (kind, importance, observed, recalled, count, dq, ...)."""
    kind, importance, observed, recalled, rcount, dq = row[:6]
    age = max(0.0, now - max(observed, recalled or 0.0))
    recency = 0.5 ** (age / (cfg.half_life_days * DAY)) if cfg.half_life_days > 0 else 0.0
    recall = 1 - math.exp(-rcount / cfg.recall_scale) if cfg.recall_scale > 0 else 0.0
    queries = 1 - math.exp(-dq / cfg.query_scale) if cfg.query_scale > 0 else 0.0
    weights = cfg.w_recency + cfg.w_recall + cfg.w_queries + cfg.w_importance
    base = (
        cfg.w_recency * recency
        + cfg.w_recall * recall
        + cfg.w_queries * queries
        + cfg.w_importance * importance
    ) / (weights or 1.0)
    return float(max(0.0, min(1.0, base * cfg.kind_weights.get(kind, 1.0))))


def _candidate(
    cfg: LightConfig, now: float, s: float, tier: str, row: tuple[Any, ...], meta: dict[str, Any]
) -> tuple[str | None, str | None]:
    kind, _imp, _observed, _recalled, rcount, dq = row[:6]
    age_days = stale_days(now, row)
    pinned = bool(meta.get("pinned"))
    if (
        tier == "short"
        and s >= cfg.promote_min_score
        and rcount >= cfg.promote_min_recalls
        and dq >= cfg.promote_min_queries
    ):
        return "promote", "score, recalls and distinct queries above thresholds"
    if tier == "archived" or pinned or kind in cfg.protected_kinds:
        return None, None
    if (
        kind == "observation"
        and "summarized_by" in meta
        and rcount == 0
        and age_days >= cfg.summarized_archive_age_days
    ):
        return "archive", "distilled into a session summary, never recalled"
    if s < cfg.archive_max_score and age_days >= cfg.archive_min_age_days:
        return "archive", "stale and low value"
    return None, None


# Every active memory with what scoring needs (deep sleep reads the same):
# after id, tier, metadata, the row is score()'s six columns, then created_at.
ACTIVE_ROWS = (
    "SELECT id, tier, metadata, kind, importance, observed_at, last_recalled_at, "
    "recall_count, distinct_queries, created_at FROM memories WHERE state = 'active' ORDER BY id"
)


def stale_days(now: float, row: tuple[Any, ...]) -> float:
    """Days since the memory entered the store or was last recalled (an ACTIVE_ROWS row
    after id, tier, metadata): what archive decisions age on, never observed_at."""
    recalled, created = row[3], row[6]
    return (now - max(float(created), float(recalled or 0.0))) / DAY


class LightSleep:
    name = "light-sleep"

    def __init__(self, cfg: LightConfig | None = None) -> None:
        self.cfg = cfg or LightConfig()

    def plan(self, conn: apsw.Connection, now: float, cancel: Cancel = NEVER) -> Plan:
        ops: list[Op] = []
        items = 0
        for mid, tier, meta_text, *row in conn.execute(ACTIVE_ROWS):
            items += 1
            cancel.every(items)
            meta = json.loads(meta_text)
            s = score(self.cfg, now, tuple(row))
            cand, reason = _candidate(self.cfg, now, s, tier, tuple(row), meta)
            old = meta.get(SCORE_KEY)
            if (
                isinstance(old, dict)
                and isinstance(old.get("score"), int | float)
                and abs(old["score"] - s) < self.cfg.score_epsilon
                and old.get("candidate") == cand
            ):
                continue
            value = {"score": round(s, 4), "candidate": cand, "reason": reason}
            ops.append(SetMeta(memory_id=mid, key=SCORE_KEY, value=value))
        scored = len(ops)
        cancel.check()
        summaries = self._summaries(conn, now, cancel)
        ops += summaries
        sources = sum(len(op.sources) for op in summaries)
        notes = (
            f"scored {items} active memories ({scored} marks changed); "
            f"{len(summaries)} session summaries over {sources} observations"
        )
        return Plan(phase=self.name, ops=ops, items=items, notes=notes)

    def _summaries(
        self, conn: apsw.Connection, now: float, cancel: Cancel = NEVER
    ) -> list[CreateSummary]:
        cfg = self.cfg
        groups: dict[tuple[str, str], list[tuple[Observation, str]]] = {}
        rows = conn.execute(
            "SELECT id, workspace, content, tags, observed_at, "
            "json_extract(metadata, '$.session_id'), json_extract(metadata, '$.event'), "
            "json_extract(metadata, '$.harness') FROM memories "
            "WHERE kind = 'observation' AND state = 'active' AND tier = 'short' "
            "AND observed_at >= ? AND json_extract(metadata, '$.session_id') IS NOT NULL "
            "AND json_extract(metadata, '$.summarized_by') IS NULL "
            "ORDER BY workspace, json_extract(metadata, '$.session_id'), observed_at, id",
            (now - cfg.session_lookback_days * DAY,),
        )
        for n, (mid, ws, content, tags, observed, sid, event, harness) in enumerate(rows, 1):
            cancel.every(n)
            seen = Observation(mid, content, str(event or ""), json.loads(tags), observed)
            groups.setdefault((ws, str(sid)), []).append((seen, str(harness or "")))
        out: list[CreateSummary] = []
        for (ws, sid), items in sorted(groups.items()):
            if len(out) >= cfg.max_sessions:
                break
            cancel.check()  # cheap next to a summary
            obs = [o for o, _ in items]
            ended = any(o.event == "SessionEnd" for o in obs)
            if not ended and now - obs[-1].observed_at < cfg.session_idle_s:
                continue  # still going: summarize it whole, later
            if len(obs) < cfg.session_min_observations:
                continue
            who = next((h for _, h in items if h), "")
            out.append(
                CreateSummary(
                    workspace=ws,
                    content=summarize(sid, who, obs, cfg.summary_budget_chars),
                    sources=[o.id for o in obs],
                    tags=["session-summary"],
                    importance=cfg.summary_importance,
                    observed_at=obs[-1].observed_at,
                    metadata={"session_id": sid, "harness": who, "phase": self.name},
                )
            )
        return out
