"""Claude Code's side of the hook: its payloads in, its hook JSON out.

Claude Code runs a command hook with one JSON object on stdin. Every event
carries ``hook_event_name``, ``session_id``, ``cwd`` and (mostly)
``transcript_path`` and ``permission_mode``; the rest depends on the event:

    SessionStart        source (startup, resume, clear, compact), model
    UserPromptSubmit    prompt
    PreToolUse          tool_name, tool_input, tool_use_id
    PostToolUse         tool_name, tool_input, tool_response, tool_use_id
    PostToolUseFailure  tool_name, tool_input, tool_use_id, error, is_interrupt
    Notification        message, title, notification_type
    Stop                stop_hook_active, last_assistant_message (newer versions)
    SubagentStart       agent_id, agent_type
    SubagentStop        agent_id, agent_type, agent_transcript_path,
                        stop_hook_active, last_assistant_message
    PreCompact          trigger (manual, auto), custom_instructions
    PostCompact         trigger
    SessionEnd          reason (clear, logout, prompt_input_exit, other, ...)

The whole payload is posted (trimmed, see `trim`). Two things Claude Code
versions differ on are filled in from the transcript, best effort and
bounded: the assistant's final message on Stop/SubagentStop when the payload
lacks ``last_assistant_message``, and the compaction summary
(``compact_summary``) on PostCompact, so that the daemon can keep both as observations.

Only SessionStart and UserPromptSubmit print anything: the briefing and the
relevant memories, as ``hookSpecificOutput.additionalContext``. Standard
library only (this is the hook's hot path).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

HARNESS = "claude-code"
# Claude Code truncates additionalContext above 10,000 characters; stay well below.
CONTEXT_CAP = 9_000
DEFAULT_BRIEF_BUDGET = 4_000
DEFAULT_RECALL_BUDGET = 1_500
RECALL_HITS = 5  # memories shown for a prompt, at most
VECTOR_FLOOR = 0.3  # cosine similarity for a hit with no word in common with the prompt
MIN_PROMPT = 8  # shorter prompts ("yes", "go on") search nothing
QUERY_CHARS = 1_000  # a long pasted prompt is searched by its beginning
TRANSCRIPT_TAIL = 1 << 20  # bytes of the transcript read to find a message

_NAME = re.compile(r"[^A-Za-z0-9_.:-]+")


def clean_name(text: object, default: str = "unknown") -> str:
    """An event or harness name as the protocol accepts it (``[A-Za-z0-9_.:-]{1,64}``)."""
    name = _NAME.sub("-", str(text or "")).strip("-")[:64]
    return name or default


def env_int(name: str, default: int, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(os.environ.get(name, default))))
    except ValueError:
        return default


# -- payload -> event -----------------------------------------------------------


def enrich(payload: dict[str, Any]) -> None:
    """Add what this Claude Code version left out of the payload, from the transcript."""
    name = payload.get("hook_event_name")
    if name in ("Stop", "SubagentStop") and not payload.get("last_assistant_message"):
        path = payload.get("agent_transcript_path") or payload.get("transcript_path")
        text = _last_in_transcript(path, _assistant_text)
        if text:
            payload["last_assistant_message"] = text
    elif name == "PostCompact" and not payload.get("compact_summary"):
        text = _last_in_transcript(payload.get("transcript_path"), _compact_summary)
        if text:
            payload["compact_summary"] = text


def _last_in_transcript(path: object, pick: Any) -> str | None:
    """The last entry of a JSONL transcript for which ``pick`` returns text."""
    if not isinstance(path, str) or not path:
        return None
    try:
        with open(os.path.expanduser(path), "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TRANSCRIPT_TAIL))
            tail = f.read(TRANSCRIPT_TAIL)
    except (OSError, ValueError):
        return None
    for line in reversed(tail.splitlines()):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the first, partial line of the tail; or garbage
        if isinstance(entry, dict):
            text = pick(entry)
            if text:
                return str(text)
    return None


def _assistant_text(entry: dict[str, Any]) -> str | None:
    if entry.get("type") != "assistant":
        return None
    message = entry.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        return "\n".join(texts) or None
    return None


def _compact_summary(entry: dict[str, Any]) -> str | None:
    if not entry.get("isCompactSummary"):
        return None
    message = entry.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        content = "\n".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return content if isinstance(content, str) and content else None


def event_key(payload: dict[str, Any], event_type: str, digest: str) -> str:
    """The idempotency key: the same hook input gives the same key.

    A tool call's ``tool_use_id`` names it (Pre- and PostToolUse share it,
    hence the event type in the key); anything else is named by a hash of
    the canonical payload. So a retried hook, or a spooled event drained
    twice, is stored once. Two identical payloads (the same prompt typed
    twice in one session) also count as one.
    """
    session = str(payload.get("session_id") or "-")[:80]
    tool_use = payload.get("tool_use_id")
    ident = f"tool:{str(tool_use)[:80]}" if tool_use else digest
    return f"cc:{session}:{event_type}:{ident}"[:200]


# -- the query that goes with an event --------------------------------------------


def query_for(payload: dict[str, Any], workspace: str) -> dict[str, Any] | None:
    """The request whose answer this event prints, if any."""
    name = payload.get("hook_event_name")
    session = payload.get("session_id")
    if name == "SessionStart":
        if payload.get("source") == "resume":
            return None  # the resumed conversation already holds its briefing
        request: dict[str, Any] = {
            "method": "brief",
            "workspace": workspace,
            "budget": env_int("REVERIE_BRIEF_BUDGET", DEFAULT_BRIEF_BUDGET, 200, CONTEXT_CAP),
        }
        if isinstance(session, str) and session:
            request["session_id"] = session[:200]
        return request
    if name == "UserPromptSubmit":
        prompt = payload.get("prompt")
        if not isinstance(prompt, str):
            return None
        prompt = prompt.strip()
        if len(prompt) < MIN_PROMPT or prompt.startswith("/"):
            return None  # "ok", "continue", slash commands: nothing to look up
        return {
            "method": "search",
            "query": prompt[:QUERY_CHARS],
            "workspace": workspace,
            "limit": RECALL_HITS * 2,  # some may be the prompt itself, just posted
            # No recency or importance boost: relevance alone, and the daemon
            # then ranks only the best `limit` (boosts re-rank every candidate:
            # measured at 100k, 30 ms of daemon CPU per search instead of 17).
            "explain": True,  # to drop hits that only ride on a neighbour (see _relevant)
        }
    return None


# -- answers -> hook output -------------------------------------------------------


def output_for(payload: dict[str, Any], result: dict[str, Any] | None) -> str | None:
    """The hook's stdout for an event, given its query's result (None: nothing)."""
    name = payload.get("hook_event_name")
    if not isinstance(result, dict):
        return None
    if name == "SessionStart":
        text = result.get("text")
        context = text.strip() if isinstance(text, str) else ""
    elif name == "UserPromptSubmit":
        context = format_recall(result, str(payload.get("prompt") or ""))
    else:
        return None
    if not context:
        return None
    return json.dumps(
        {
            "hookSpecificOutput": {
                "hookEventName": name,
                "additionalContext": context[:CONTEXT_CAP],
            }
        },
        ensure_ascii=False,
    )


def format_recall(result: dict[str, Any], prompt: str) -> str:
    """Search hits as a short list with ids, within the recall budget."""
    budget = env_int("REVERIE_RECALL_BUDGET", DEFAULT_RECALL_BUDGET, 200, CONTEXT_CAP)
    head = "Memories from reverie that may bear on this prompt (`reverie get ID` shows one):"
    lines = [head]
    used = len(head)
    shown = 0
    for hit in result.get("hits") or []:
        memory = hit.get("memory") if isinstance(hit, dict) else None
        if not isinstance(memory, dict) or not _relevant(hit) or _is_this_prompt(memory, prompt):
            continue
        line = _hit_line(memory, budget - used - 1)
        if line is None:
            break
        lines.append(line)
        used += len(line) + 1
        shown += 1
        if shown >= RECALL_HITS:
            break
    return "\n".join(lines) if shown else ""


def _relevant(hit: dict[str, Any]) -> bool:
    """A hit that matches the prompt itself: by its words, or closely by meaning.

    A search always returns its best candidates, however poor; and hybrid
    search lends score to a hit's neighbours (memories of the same session
    or moment), which is good context for a person browsing but noise in a
    prompt's context. Keep hits with a lexical match, or a vector similarity
    of at least VECTOR_FLOOR.
    """
    explain = hit.get("explain")
    if not isinstance(explain, dict):
        return True  # a daemon that does not explain: trust its ranking
    if explain.get("lexical_rank") is not None:
        return True
    similarity = explain.get("vector_score")
    return isinstance(similarity, int | float) and similarity >= VECTOR_FLOOR


def _is_this_prompt(memory: dict[str, Any], prompt: str) -> bool:
    """The observation made from this very prompt: posted alongside the search,
    or earlier (the daemon keeps one observation per text and workspace).
    Echoing the user's own words back adds nothing."""
    content = " ".join(str(memory.get("content") or "").split())
    needle = " ".join(prompt.split())[:200]
    if not needle or needle not in content:
        return False
    metadata = memory.get("metadata")
    if isinstance(metadata, dict) and "event" in metadata:
        return bool(metadata["event"] == "UserPromptSubmit")
    created = memory.get("created_at")  # a daemon that does not say: only a fresh one
    return isinstance(created, int | float) and time.time() - created < 60


def _hit_line(memory: dict[str, Any], room: int) -> str | None:
    content = " ".join(str(memory.get("content") or "").split())
    prefix = f"- #{memory.get('id')} [{memory.get('kind', '?')}"
    observed = memory.get("observed_at")
    if isinstance(observed, int | float):
        prefix += time.strftime(", %Y-%m-%d", time.localtime(observed))
    prefix += "] "
    room = min(room, len(prefix) + 400)  # one memory never takes the whole budget
    if room < len(prefix) + 40:
        return None
    if len(prefix) + len(content) > room:
        content = content[: room - len(prefix) - 1].rstrip() + "…"
    return prefix + content
