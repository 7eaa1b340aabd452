"""The deterministic text of a session summary, built from its observations.

No model: the summary keeps what a later session most often needs from a
finished one, in a fixed order, under a character budget:

    Session <id> (<harness>): <n> observations, <start> → <end> UTC.
    Asked: <first prompts, in order>
    Tools: Bash (5), Edit (3), ...        (by use, then name)
    Failures: <first failures>
    Outcome: <the last assistant message>

Observations are already redacted when stored; `remember` redacts the
summary again on the way in.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import msgspec
from reverie.store.redaction import redact

MAX_PROMPTS = 5
MAX_FAILURES = 3
LINE_CHARS = 200
OUTCOME_CHARS = 400


class Observation(msgspec.Struct, frozen=True):
    id: int
    content: str
    event: str
    tags: list[str]
    observed_at: float


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _after(prefix: str, text: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def summarize(session_id: str, harness: str, obs: list[Observation], budget: int) -> str:
    """The summary text for one session's observations (in time order), at most `budget` chars."""
    # Rows stored before a pattern existed (or imported) may still hold a
    # secret: redact before clipping, which would leave a piece that no
    # longer looks like one.
    obs = [msgspec.structs.replace(o, content=redact(o.content)) for o in obs]
    prompts = [
        _clip(_after("User: ", o.content), LINE_CHARS)
        for o in obs
        if o.event == "UserPromptSubmit" or o.content.startswith("User: ")
    ]
    tools = Counter(t[5:] for o in obs for t in o.tags if t.startswith("tool:"))
    failures = [
        _clip(o.content, LINE_CHARS)
        for o in obs
        if o.event == "PostToolUseFailure" or "error" in o.tags
    ]
    finals = [o.content for o in obs if o.event == "Stop" or o.content.startswith("Assistant: ")]
    head = f"Session {session_id}"
    head += f" ({harness})" if harness else ""
    head += (
        f": {len(obs)} observations, {_utc(obs[0].observed_at)} → {_utc(obs[-1].observed_at)} UTC."
    )
    lines = [head]
    if prompts:
        lines.append("Asked: " + " | ".join(prompts[:MAX_PROMPTS]))
        if len(prompts) > MAX_PROMPTS:
            lines[-1] += f" (+{len(prompts) - MAX_PROMPTS} more)"
    if tools:
        ranked = sorted(tools.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("Tools: " + ", ".join(f"{name} ({n})" for name, n in ranked))
    if failures:
        lines.append("Failures: " + " | ".join(failures[:MAX_FAILURES]))
        if len(failures) > MAX_FAILURES:
            lines[-1] += f" (+{len(failures) - MAX_FAILURES} more)"
    if finals:
        lines.append("Outcome: " + _clip(_after("Assistant: ", finals[-1]), OUTCOME_CHARS))
    if len(lines) == 1:  # nothing typed: keep the first lines as they are
        lines += [_clip(o.content, LINE_CHARS) for o in obs[:MAX_PROMPTS]]
    return _clip_lines(lines, budget)


def _clip_lines(lines: list[str], budget: int) -> str:
    """Join lines, cutting the last one that fits (whole lines first)."""
    out: list[str] = []
    used = 0
    for line in lines:
        room = budget - used - (1 if out else 0)
        if room <= 20:
            break
        out.append(line if len(line) <= room else _clip(line, room))
        used += len(out[-1]) + (1 if len(out) > 1 else 0)
    return "\n".join(out)
