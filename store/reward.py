"""The reward of a completed episode: one deterministic number in [0, 1].

    reward = base(outcome) x (1 - error_penalty - step_penalty - latency_penalty)

    base            success 1, partial 0.5, failure 0
    error_penalty   0.25 x (failed steps / steps)                  in [0, 0.25]
    step_penalty    0.15 x excess(steps, 10)                        in [0, 0.15)
    latency_penalty 0.10 x excess(total step latency, 120 s)        in [0, 0.10)
    excess(x, b)    0 up to the baseline b, then 1 - b/x: 0.5 at twice the
                    baseline, 0.75 at four times, approaching 1

Why this shape:
* The outcome decides the band, efficiency only moves an episode within it:
  the penalties add up to less than 0.5, so a success scores in [0.5, 1],
  a partial in [0.25, 0.5] and a failure 0 (the bands touch only in the
  limit). A messy success still beats the cleanest partial, because "it
  worked" is what the next agent most needs to know.
* A failure scores 0 however efficient it was: there is nothing to imitate.
  It is still kept and found (store/episodes.py ranks it lower, it does not
  hide it): knowing what failed is worth something too.
* The penalties are relative (an error rate, not an error count) or
  saturating (excess), so no episode is pushed out of its band by length
  alone, and no constant needs a hard cut-off. The baselines (10 steps, two
  minutes of tool time) are what a routine coding-agent task takes; an
  episode within them is not penalised at all.
* An episode with no steps logged has no evidence of inefficiency: its
  reward is its base.
"""

from __future__ import annotations

from reverie.rpc.proto_episodes import EpisodeOutcome, Reward

OUTCOME_BASE: dict[str, float] = {"success": 1.0, "partial": 0.5, "failure": 0.0}
ERROR_WEIGHT = 0.25
STEP_WEIGHT = 0.15
STEP_BASELINE = 10
LATENCY_WEIGHT = 0.10
LATENCY_BASELINE_MS = 120_000


def excess(value: float, baseline: float) -> float:
    """0 up to the baseline, then 1 - baseline/value: in [0, 1)."""
    return 0.0 if value <= baseline else 1.0 - baseline / value


def reward(outcome: EpisodeOutcome, *, steps: int, errors: int, latency_ms: int) -> Reward:
    base = OUTCOME_BASE[outcome]
    error_rate = min(1.0, errors / steps) if steps > 0 else 0.0
    error_penalty = ERROR_WEIGHT * error_rate
    step_penalty = STEP_WEIGHT * excess(steps, STEP_BASELINE)
    latency_penalty = LATENCY_WEIGHT * excess(latency_ms, LATENCY_BASELINE_MS)
    value = base * (1.0 - error_penalty - step_penalty - latency_penalty)
    return Reward(
        value=round(min(1.0, max(0.0, value)), 6),
        base=base,
        error_penalty=round(error_penalty, 6),
        step_penalty=round(step_penalty, 6),
        latency_penalty=round(latency_penalty, 6),
    )
