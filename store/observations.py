"""From a harness event to the short observation a memory keeps, and payload trimming.

Pure functions, standard library and msgspec only: the Claude Code hook
imports :func:`trim_payload` to keep what it posts (or spools) under the
frame limit, and the daemon uses the same function, so both sides trim the
same way.

An observation is one short line of what happened, in words a later search
will use: ``User: how do we deploy?``, ``Bash: npm test (Run the tests) →
3 failed, 12 passed``, ``Assistant: The deploy script is tools/deploy.sh``.
Events that carry nothing to remember (PreToolUse: the PostToolUse that
follows says more; SessionStart; SubagentStart) make no observation. The
text is deterministic in the payload, so the same thing seen twice in one
workspace hashes the same and is stored once.

Observations are built from the *redacted* payload; the caller redacts the
final text again (joining fields must not assemble a secret).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

__all__ = [
    "PAYLOAD_MAX_BYTES",
    "Observation",
    "observe",
    "trim_payload",
    "trim_text",
]

# One event's payload, as JSON, is kept up to this size: a Read of a large
# file or a long command output is trimmed, never refused. Large enough for
# any prompt or summary; an observation uses a few hundred characters of it.
PAYLOAD_MAX_BYTES = 64 * 1024
_MIN_STRING = 256  # strings are never trimmed below this while fitting a payload
_MAX_ITEMS = 1000  # list items (and object keys) kept when strings alone do not fit
# Back off this far to a separator, so that a cut never splits a token (a
# secret whose tail is cut off may no longer look like one to redaction).
_BACKOFF = 200
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+/=.~%")

_json = msgspec.json.Encoder()
_MARKERS = re.compile(r"\[REDACTED:[^\]]*\]")  # what redaction leaves in place of a secret
MARKER_PREFIX = "[REDACTED:"


# ---------------------------------------------------------------------------
# Trimming


def trim_marker(removed: int, unit: str = "chars") -> str:
    return f"…[trimmed {removed} {unit}]"


def trim_text(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, with a marker saying how much went.

    The cut backs off to the last separator (whitespace, punctuation) within
    a short distance, so that no token is split in two.
    """
    if len(text) <= limit:
        return text
    cut = limit
    stop = max(0, limit - _BACKOFF)
    while cut > stop and text[cut - 1] in _TOKEN_CHARS:
        cut -= 1
    if cut == stop:  # one long token: cut where asked
        cut = limit
    return text[:cut] + trim_marker(len(text) - cut)


def _trim_to(limit: int, text: str) -> str:
    return trim_text(text, limit)


def _encoded_size(payload: Any) -> int:
    try:
        return len(_json.encode(payload))
    except (TypeError, ValueError, OverflowError):
        return len(_json.encode(jsonable(payload)))
    except RecursionError:
        return -1


def trim_payload(payload: dict[str, Any], max_bytes: int = PAYLOAD_MAX_BYTES) -> dict[str, Any]:
    """The payload itself if its JSON fits in ``max_bytes``, else a trimmed copy.

    Long strings are cut first (each to the same length, halved until the
    whole fits), each with a visible ``…[trimmed N chars]`` marker; if that is
    not enough (a payload of many small items), long lists and objects keep
    their first items and a marker. The result always fits.
    """
    size = _encoded_size(payload)
    if size < 0:
        return {"trimmed": "…[payload nested too deeply to keep]"}
    if size <= max_bytes:
        return payload
    # Strings first (halving their cap), then also long lists and objects.
    for items in (None, _MAX_ITEMS, _MAX_ITEMS // 10, 10, 1):
        cap = max(_MIN_STRING, max_bytes // 2)
        while True:
            out: dict[str, Any] = _map_strings(
                payload, functools.partial(_trim_to, cap), items=items
            )
            if _encoded_size(out) <= max_bytes:
                return out
            if cap <= _MIN_STRING:
                break
            cap = max(_MIN_STRING, cap // 2)
    # Deep nesting or long keys: nothing of the structure fits. Say so.
    text = _json.encode(jsonable(payload)).decode()
    return {"trimmed": trim_text(text, max(0, max_bytes // 2 - 64))}


def _map_strings(root: Any, fn: Callable[[str], str], *, items: int | None = None) -> Any:
    """A copy of a JSON-like value with ``fn`` applied to each string value.

    With ``items``, lists and objects keep their first ``items`` entries and
    end with a marker. Iterative: payload depth is not ours to bound.
    """
    if isinstance(root, str):
        return fn(root)
    if not isinstance(root, (dict, list, tuple)):
        return root
    out: Any = {} if isinstance(root, dict) else []
    stack: list[tuple[Any, Any]] = [(root, out)]
    while stack:
        src, dst = stack.pop()
        entries = list(src.items()) if isinstance(src, dict) else list(enumerate(src))
        extra = 0
        if items is not None and len(entries) > items:
            extra = len(entries) - items
            entries = entries[:items]
        for key, value in entries:
            if isinstance(value, (dict, list, tuple)):
                child: Any = {} if isinstance(value, dict) else []
                stack.append((value, child))
                value = child
            elif isinstance(value, str):
                value = fn(value)
            if isinstance(dst, dict):
                dst[key] = value
            else:
                dst.append(value)
        if extra:
            mark = trim_marker(extra, "items")
            if isinstance(dst, dict):
                dst["…"] = mark
            else:
                dst.append(mark)
    return out


def jsonable(root: Any) -> Any:
    """A copy that JSON can encode: odd keys and values (bytes, msgpack Ext) become strings."""
    if isinstance(root, (str, int, float, bool)) or root is None:
        return root
    if not isinstance(root, (dict, list, tuple)):
        return repr(root)
    out: Any = {} if isinstance(root, dict) else []
    stack: list[tuple[Any, Any]] = [(root, out)]
    while stack:
        src, dst = stack.pop()
        for key, value in src.items() if isinstance(src, dict) else enumerate(src):
            if isinstance(value, (dict, list, tuple)):
                child: Any = {} if isinstance(value, dict) else []
                stack.append((value, child))
                value = child
            elif not (isinstance(value, (str, int, float, bool)) or value is None):
                value = repr(value)
            if isinstance(dst, dict):
                dst[key if isinstance(key, str) else str(key)] = value
            else:
                dst.append(value)
    return out


# ---------------------------------------------------------------------------
# Observations


class Observation(NamedTuple):
    text: str
    tags: list[str]
    importance: float


OBSERVATION_MAX_CHARS = 4000
_PROMPT_CHARS = 2000  # a user prompt or an assistant's final message
_INPUT_CHARS = 300  # a tool's salient input
_RESPONSE_CHARS = 300  # a tool's response
_SUMMARY_CHARS = 4000  # a compaction summary

# A tool input's salient fields, most telling first; the first two present are kept.
_SALIENT = (
    "command",
    "file_path",
    "notebook_path",
    "pattern",
    "url",
    "query",
    "path",
    "description",
    "subagent_type",
    "skill",
    "prompt",
)
# Where the text of a tool response or a generic event usually is.
_RESPONSE_FIELDS = ("stdout", "stderr", "output", "result", "content", "text", "message", "error")
_GENERIC_FIELDS = ("text", "content", "message", "prompt", "summary")

# How much an observation of each event weighs at first (the dream phases re-score).
_IMPORTANCE = {
    "UserPromptSubmit": 0.5,
    "PostToolUse": 0.3,
    "PostToolUseFailure": 0.5,
    "Stop": 0.5,
    "SubagentStop": 0.4,
    "PreCompact": 0.5,
    "PostCompact": 0.7,
    "SessionEnd": 0.1,
    "Notification": 0.2,
}
_GENERIC_IMPORTANCE = 0.4


def tag(prefix: str, name: str) -> str:
    """A valid tag (no whitespace or commas, at most 64 characters)."""
    made = _tags.get((prefix, name))
    if made is None:
        made = _tag(prefix, name)
        if len(_tags) >= 1024:  # event types and tool names: a few dozen in practice
            _tags.clear()
        _tags[prefix, name] = made
    return made


_tags: dict[tuple[str, str], str] = {}


def _tag(prefix: str, name: str) -> str:
    if not (name.isprintable() and " " not in name and "," not in name):  # else: as it is
        name = "_".join(name.split()).replace(",", "_")
    return (prefix + ":" + name)[:64]


def flat(text: str) -> str:
    """Runs of whitespace folded to one space, ends stripped (``" ".join(text.split())``).

    Most texts here already are: every whitespace character but the space is
    unprintable, so a printable text without doubled, leading or trailing
    spaces is its own result, and splitting it into words (the cost) is skipped.
    """
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return " ".join(text.split())


def _short(text: str, limit: int, *, tail: bool = False) -> str:
    """Whitespace folded, then clipped; a long text is cut to a window first."""
    window = 4 * limit
    if len(text) > window:
        text = text[-window:] if tail else text[:window]
    return _clip(flat(text), limit, tail=tail)


def _clip(text: str, limit: int, *, tail: bool = False) -> str:
    """At most ``limit`` characters; ``tail`` keeps the end (where command output concludes)."""
    if len(text) <= limit:
        return text
    if tail:
        return "…" + text[len(text) - limit + 1 :]
    return text[: limit - 1] + "…"


def _text_of(value: Any) -> str:
    """The readable text of a field: a string, content blocks, or compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [_text_of(v) for v in value if not isinstance(v, dict) or "text" in v]
        return "\n".join(p for p in parts if p)
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return str(value["text"])
        return _json_text(value)
    if value is None or isinstance(value, bool):
        return ""
    return str(value)


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):
        return repr(value)


def _body(value: Any) -> str:
    """A field's text, or "" if nothing but redaction markers is left of it."""
    text = _text_of(value).strip()
    if MARKER_PREFIX not in text:  # the common case: no substitution to make
        return text
    return text if _MARKERS.sub("", text).strip() else ""


def _first_text(payload: dict[str, Any], fields: tuple[str, ...]) -> str:
    for name in fields:
        text = _body(payload.get(name))
        if text:
            return text
    return ""


def _salient_input(tool: str, tool_input: Any) -> str:
    if not isinstance(tool_input, dict):
        return _short(_text_of(tool_input), _INPUT_CHARS)
    parts = []
    for k in _SALIENT:
        if isinstance(v := tool_input.get(k), str) and v.strip():
            parts.append(_short(v, _INPUT_CHARS))
            if len(parts) == 2:
                break
    if tool in ("Edit", "MultiEdit") and isinstance(tool_input.get("new_string"), str):
        parts.append("→ " + _short(tool_input["new_string"], 120))
    elif tool == "Write" and isinstance(tool_input.get("content"), str):
        parts.append(_short(tool_input["content"], 120))
    elif tool == "TodoWrite" and isinstance(tool_input.get("todos"), list):
        todos = [str(t.get("content", "")) for t in tool_input["todos"] if isinstance(t, dict)]
        parts.append("; ".join(t for t in todos if t))
    if not parts:
        parts = [_json_text(tool_input)] if tool_input else []
    if len(parts) >= 2 and parts[1] and not parts[1].startswith("→"):
        parts[1] = f"({parts[1]})"
    return _clip(" ".join(p for p in parts if p), _INPUT_CHARS)


def _response(tool: str, response: Any) -> str:
    if isinstance(response, dict):
        if tool in ("Read", "Edit", "MultiEdit", "Write", "NotebookEdit"):
            return ""  # the file's text: the input already says what happened
        if tool in ("Glob", "Grep") and isinstance(response.get("numFiles"), int):
            return f"{response['numFiles']} files"
        out, err = response.get("stdout"), response.get("stderr")
        if isinstance(out, str) or isinstance(err, str):
            text = "\n".join(t for t in (out, err) if isinstance(t, str) and t.strip())
            if response.get("interrupted") is True:
                text += " (interrupted)"
            return _short(text, _RESPONSE_CHARS, tail=True)
        text = _first_text(response, _RESPONSE_FIELDS)
    else:
        text = _text_of(response)
    return _short(text, _RESPONSE_CHARS)


def _tool_name(payload: dict[str, Any]) -> str:
    name = payload.get("tool_name")
    return name.strip()[:64] if isinstance(name, str) and name.strip() else "tool"


def _tool_use(payload: dict[str, Any]) -> tuple[str, str]:
    tool = _tool_name(payload)
    return tool, _salient_input(tool, payload.get("tool_input"))


def observe(event_type: str, payload: dict[str, Any]) -> Observation | None:
    """The observation an event makes, or None when it carries nothing to remember."""
    if event_type in ("PreToolUse", "SessionStart", "SubagentStart"):
        return None  # nothing new to remember (PostToolUse says more than PreToolUse)
    text = ""
    tags = [tag("event", event_type)]
    if event_type == "UserPromptSubmit":
        if prompt := _body(payload.get("prompt")):
            text = "User: " + _clip(prompt, _PROMPT_CHARS)
    elif event_type == "PostToolUse":
        tool, salient = _tool_use(payload)
        tags.append(tag("tool", tool))
        resp = _response(tool, payload.get("tool_response"))
        text = tool + (f": {salient}" if salient else "") + (f" → {resp}" if resp else "")
    elif event_type == "PostToolUseFailure":
        tool, salient = _tool_use(payload)
        tags += [tag("tool", tool), "error"]
        error = _short(_first_text(payload, ("error", "message", "tool_response")), 500)
        text = f"{tool} failed" + (f": {salient}" if salient else "")
        text += f" → {error}" if error else ""
    elif event_type in ("Stop", "SubagentStop"):
        message = _first_text(payload, ("last_assistant_message", "last_message"))
        if message:
            who = "Assistant"
            if event_type == "SubagentStop":
                kind = payload.get("agent_type")
                who = f"Subagent ({kind})" if isinstance(kind, str) and kind else "Subagent"
            text = f"{who}: " + _clip(message, _PROMPT_CHARS)
    elif event_type in ("PreCompact", "PostCompact"):
        summary = _first_text(payload, ("compact_summary", "summary", "compaction_summary"))
        if summary:
            text = "Compaction summary: " + _clip(summary, _SUMMARY_CHARS)
        elif instructions := _body(payload.get("custom_instructions")):
            text = "Compaction instructions: " + _clip(instructions, _PROMPT_CHARS)
    elif event_type == "SessionEnd":
        reason = _body(payload.get("reason"))
        text = f"Session ended: {_short(reason, 200)}" if reason else ""
    elif event_type == "Notification":
        message = _short(_body(payload.get("message")), 500)
        text = f"Notification: {message}" if message else ""
    elif body := _first_text(payload, _GENERIC_FIELDS):
        text = f"{event_type}: {_clip(body, _PROMPT_CHARS)}"
        if isinstance(payload.get("tool_name"), str):
            tags.append(tag("tool", _tool_name(payload)))
    if not text.strip():
        return None
    importance = _IMPORTANCE.get(event_type, _GENERIC_IMPORTANCE)
    return Observation(_clip(text.strip(), OBSERVATION_MAX_CHARS), tags, importance)
