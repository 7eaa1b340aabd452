"""`reverie hook`: harness hooks post events here; it never fails, never stalls.

    reverie hook claude-code                 a Claude Code hook (every event)
    reverie hook generic --event NAME [--harness NAME] [--session ID]
                         [--workspace PATH] [--key KEY]

One JSON object on stdin becomes one event, posted to the daemon; for Claude
Code's SessionStart and UserPromptSubmit the briefing or the relevant
memories come back on stdout (rpc/hook_claude.py). The post and the query go
out pipelined on one connection with the hello: one round trip.

Never lose, never block:

- The exit status is always 0 and stdout is either nothing or one valid hook
  JSON object, whatever happens: daemon down, socket missing or not a
  socket, stdin empty or not JSON, a bug (everything is caught at the top).
  stderr stays quiet; diagnostics go to ``$XDG_STATE_HOME/reverie/hook.log``
  (``REVERIE_HOOK_LOG`` names another file, or ``off``).
- An event the daemon did not acknowledge is appended to the spool
  (rpc/spool.py: fsync'ed), which the daemon drains; its idempotency key
  makes a drained event that had in fact arrived count once.
- Time is bounded. Connecting to a Unix socket either works at once or fails
  at once (ENOENT, ECONNREFUSED), so its 0.25 s limit only matters for a
  daemon too stuck to accept. The whole exchange has a deadline: 1 s when
  only posting (a healthy daemon answers in ~1 ms; past a second something
  is wrong, and the spool loses nothing), 1.5 s for a prompt's memories and
  2.5 s for a session's briefing (worth a little wait, once per session).
  ``REVERIE_HOOK_TIMEOUT`` (seconds) overrides all three. A deadline missed
  trips a breaker for 30 s: hooks meanwhile spool at once instead of each
  waiting for a hung daemon.
- ``REVERIE_CAPTURE=off`` (or 0, false, no) posts and spools nothing; the
  briefing and the memories are still given (they only read).

Start-up is most of a hook's cost, so this module and the two it uses
(hook_claude, hook_wire) import the standard library only, and only what is
needed: no argparse, no msgspec, no daemon configuration module. `python -m
reverie hook ...` comes here before the CLI's parser is even imported.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from reverie.rpc import hook_claude
from reverie.rpc.hook_wire import WireError, exchange

POST_TIMEOUT = 1.0
PROMPT_TIMEOUT = 1.5
BRIEF_TIMEOUT = 2.5
CONNECT_TIMEOUT = 0.25
BREAKER_S = 30.0
STDIN_MAX = 64 << 20  # read at most this much of stdin (the rest is drained)
PAYLOAD_MAX = 1 << 20  # an event's payload, as JSON, is trimmed to about this (the
# daemon keeps less, store/observations.py: this only bounds what travels and spools)
LIST_MAX = 1_000  # items kept of a long list
DEPTH_MAX = 32  # nesting kept
LOG_MAX = 1 << 20  # hook.log is restarted past this size
_TOKEN_PUNCT = frozenset("_-+/=.~%")  # characters that occur inside tokens and keys

_OPTIONS = ("--socket", "--event", "--harness", "--session", "--workspace", "--key")
USAGE = """\
usage: reverie hook claude-code [--socket PATH]
       reverie hook generic --event NAME [--harness NAME] [--session ID]
                            [--workspace PATH] [--key KEY] [--socket PATH]
JSON on stdin; always exits 0 (see contrib/claude-code and contrib/generic).
"""


def main(argv: Sequence[str]) -> int:
    """`reverie hook ...` without argparse; always 0."""
    try:
        kind, options, unknown = parse_args(argv)
        if unknown:
            log(f"ignored arguments: {' '.join(unknown)}")
        return run(kind, options)
    except BaseException as e:  # a hook must never fail the agent
        _log_exception(e)
        return 0


def parse_args(argv: Sequence[str]) -> tuple[str | None, dict[str, str], list[str]]:
    """(``claude-code``/``generic``/None, ``{"event": ...}``, unrecognised words)."""
    kind: str | None = None
    options: dict[str, str] = {}
    unknown: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        word = args[i]
        name, eq, value = word.partition("=")
        if name in _OPTIONS:
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            options[name[2:]] = value
        elif word == "--json":
            pass  # accepted like every command's; the output is the harness's anyway
        elif kind is None and not word.startswith("-"):
            kind = word
        else:
            unknown.append(word)
        i += 1
    return kind, options, unknown


def run(kind: str | None, options: dict[str, str]) -> int:
    """Run one hook; always 0. ``options`` as parse_args gives them."""
    try:
        if kind == "claude-code":
            _claude_code(options)
        elif kind == "generic":
            _generic(options)
        else:
            log(f"unknown hook {kind!r}; expected claude-code or generic")
    except BaseException as e:  # a hook must never fail the agent
        _log_exception(e)
    return 0


# -- the two hooks ------------------------------------------------------------------


def _claude_code(options: dict[str, str]) -> None:
    raw = read_stdin()
    at = time.time()
    payload = parse_payload(raw)
    if payload is None:
        if raw.strip() and capture_enabled():  # not JSON: keep what came, it may be all
            workspace = _workspace_id(None)
            _deliver(_unparsed_event("claude-code", raw, workspace, at), None, options)
        return
    digest = _digest(payload)
    workspace = _workspace_id(payload.get("cwd"))
    query = hook_claude.query_for(payload, workspace)
    event = None
    if capture_enabled():
        hook_claude.enrich(payload)
        event_type = hook_claude.clean_name(payload.get("hook_event_name"))
        session = payload.get("session_id")
        event = {
            "key": hook_claude.event_key(payload, event_type, digest),
            "harness": hook_claude.HARNESS,
            "type": event_type,
            "workspace": workspace,
            "session_id": session[:200] if isinstance(session, str) and session else None,
            "payload": trim(payload),
            "at": _iso(at),
        }
    result = _deliver(event, query, options)
    out = hook_claude.output_for(payload, result)
    if out:
        _print(out)


def _generic(options: dict[str, str]) -> None:
    raw = read_stdin()
    at = time.time()
    if not capture_enabled():
        return
    event_type = hook_claude.clean_name(options.get("event"))
    harness = hook_claude.clean_name(options.get("harness"), "generic")
    if not options.get("event"):
        log("reverie hook generic: --event NAME is required; posting as 'unknown'")
    value = parse_payload(raw, objects_only=False)
    if value is None and raw.strip():
        payload: dict[str, Any] = {"text": raw.decode("utf-8", "replace")}
    elif isinstance(value, dict):
        payload = value
    elif value is None:
        payload = {}
    else:
        payload = {"value": value}
    session = options.get("session") or payload.get("session_id")
    session = str(session)[:200] if session else None
    place = options.get("workspace")
    if place and place.startswith(("git:", "path:")) and not os.path.exists(place):
        workspace = place[:512]  # a workspace id given as is
    else:
        workspace = _workspace_id(place or payload.get("cwd"))
    key = options.get("key") or f"{harness}:{session or '-'}:{event_type}:{_digest(payload)}"
    event = {
        "key": key[:200],
        "harness": harness,
        "type": event_type,
        "workspace": workspace,
        "session_id": session,
        "payload": trim(payload),
        "at": _iso(at),
    }
    _deliver(event, None, options)


def _unparsed_event(harness: str, raw: bytes, workspace: str, at: float) -> dict[str, Any]:
    text = raw.decode("utf-8", "replace")
    return {
        "key": f"{harness}:unparsed:{_hash(raw)}",
        "harness": harness,
        "type": "unparsed",
        "workspace": workspace,
        "session_id": None,
        "payload": trim({"raw": text}),
        "at": _iso(at),
    }


# -- posting: the daemon, else the spool ------------------------------------------


def _deliver(
    event: dict[str, Any] | None, query: dict[str, Any] | None, options: dict[str, str]
) -> dict[str, Any] | None:
    """Post ``event`` and ask ``query`` in one round trip; spool an unacknowledged event.

    Returns the query's result (None if there was none or it failed).
    """
    requests: list[dict[str, Any]] = []
    if event is not None:
        requests.append({"method": "post_events", "events": [event]})
    if query is not None:
        requests.append(query)
    if not requests:
        return None
    answers: dict[int, dict[str, Any]] = {}
    problem = ""
    if _breaker_open():
        problem = "the daemon missed a deadline recently; not waiting for it"
    else:
        timeout = _timeout(query)
        deadline = time.monotonic() + timeout
        try:
            answers = exchange(
                socket_path(options.get("socket")),
                requests,
                deadline=deadline,
                connect_timeout=CONNECT_TIMEOUT,
                client="reverie-hook",
            )
        except WireError as e:
            problem = str(e)
        if len(answers) < len(requests) and time.monotonic() >= deadline:
            problem = problem or f"no complete answer within {timeout:g}s"
            _trip_breaker()
    if event is not None:
        posted = answers.get(1)
        if posted is None or "result" not in posted:
            reason = problem or _error_text(posted)
            _spool(event, reason)
    if query is None:
        return None
    answer = answers.get(len(requests))
    if answer is None or not isinstance(answer.get("result"), dict):
        if answer is not None:
            log(f"{query['method']} failed: {_error_text(answer)}")
        return None
    result: dict[str, Any] = answer["result"]
    return result


def _timeout(query: dict[str, Any] | None) -> float:
    try:
        override = float(os.environ.get("REVERIE_HOOK_TIMEOUT", ""))
        if 0 < override <= 60:
            return override
    except ValueError:
        pass
    if query is None:
        return POST_TIMEOUT
    return BRIEF_TIMEOUT if query["method"] == "brief" else PROMPT_TIMEOUT


def _error_text(answer: dict[str, Any] | None) -> str:
    if answer is None:
        return "no answer"
    error = answer.get("error")
    if isinstance(error, dict):
        return f"{error.get('message')} [{error.get('code')}]"
    return "an answer without a result"


def _spool(event: dict[str, Any], reason: str) -> None:
    try:
        import msgspec
        from reverie.rpc import spool
        from reverie.rpc.proto_events import Event

        path = spool.append([msgspec.convert(event, Event)])
        log(f"spooled {event['type']} event ({reason}) to {path}")
    except BaseException as e:  # never fail; but say so loudly in the log
        _log_exception(e, f"LOST {event.get('type')} event {event.get('key')} ({reason}): ")


# -- input --------------------------------------------------------------------------


def read_stdin() -> bytes:
    """All of stdin up to STDIN_MAX (the rest is read and dropped); b"" for a terminal."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return b""
    try:
        if os.isatty(fd):
            return b""  # run by hand: do not wait for a payload that is not coming
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            if size < STDIN_MAX:
                chunks.append(chunk)
            size += len(chunk)  # keep reading: a writer must not get EPIPE
        data = b"".join(chunks)
        return data[:STDIN_MAX]
    except OSError:
        return b""


def parse_payload(raw: bytes, *, objects_only: bool = True) -> Any:
    """The JSON on stdin (a dict; any value if not ``objects_only``), or None."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if objects_only and not isinstance(value, dict):
        return None
    return value


def capture_enabled() -> bool:
    value = os.environ.get("REVERIE_CAPTURE", "").strip().lower()
    return value not in ("off", "0", "false", "no")


def _workspace_id(place: object) -> str:
    from reverie.rpc.workspace import workspace_for

    path = place if isinstance(place, str) and place else None
    return workspace_for(path).id[:512]


def trim(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with long strings and lists cut (marked), to about PAYLOAD_MAX as JSON.

    Strings are cut to the same length, divided by 4 until the whole fits;
    lists keep LIST_MAX items and nesting DEPTH_MAX levels (the encoder is
    recursive). The daemon trims what it keeps further; this bounds what
    travels and what the spool holds.
    """
    cap = PAYLOAD_MAX
    while True:
        trimmed = _trim(payload, cap, 0)
        if cap <= 256 or len(json.dumps(trimmed, ensure_ascii=False)) <= PAYLOAD_MAX:
            return trimmed  # type: ignore[no-any-return]
        cap //= 4


def _trim(value: Any, cap: int, depth: int) -> Any:
    if isinstance(value, str):
        return _cut(value, cap)
    if depth >= DEPTH_MAX and isinstance(value, dict | list):
        return "…[trimmed: nested too deeply]"
    if isinstance(value, dict):
        return {str(k)[:cap]: _trim(v, cap, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        kept = [_trim(v, cap, depth + 1) for v in value[:LIST_MAX]]
        if len(value) > LIST_MAX:
            kept.append(f"…[trimmed {len(value) - LIST_MAX} items]")
        return kept
    return value


def _cut(text: str, cap: int) -> str:
    """``text`` cut to about ``cap`` characters, marked as store/observations.py marks it.

    The cut backs off to a separator, so that it never splits a token: half
    a secret may no longer look like one to the daemon's redaction.
    """
    if len(text) <= cap:
        return text
    cut = cap
    stop = max(0, cap - 200)
    while cut > stop and (text[cut - 1].isalnum() or text[cut - 1] in _TOKEN_PUNCT):
        cut -= 1
    if cut == stop:  # one long token: cut where asked
        cut = cap
    return text[:cut] + f"…[trimmed {len(text) - cut} chars]"


def _digest(payload: dict[str, Any]) -> str:
    try:
        canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        canonical = repr(payload)
    return _hash(canonical.encode("utf-8", "replace"))


def _hash(data: bytes) -> str:
    try:  # the builtin module: hashlib would load OpenSSL (~4 ms) for the same function
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - CPython always has it
        from hashlib import blake2b
    return blake2b(data, digest_size=16).hexdigest()


def _iso(at: float) -> str:
    """RFC 3339 in UTC, which msgspec decodes as a datetime (no datetime import)."""
    micro = int((at % 1) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{micro:06d}Z"


# -- where things are ------------------------------------------------------------


def socket_path(explicit: str | None = None) -> str:
    """As `reverie.rpc.client.resolve_socket`, without importing the configuration module.

    --socket, else REVERIE_SOCKET, else the config file's ``[daemon] socket``,
    else daemon/config.py's default (tests/test_hook.py checks they agree).
    """
    if explicit:
        return os.path.expanduser(explicit)
    if env := os.environ.get("REVERIE_SOCKET"):
        return os.path.expanduser(env)
    configured = _configured_socket()
    if configured:
        return os.path.expanduser(configured)
    if runtime := os.environ.get("RUNTIME_DIRECTORY"):
        return os.path.join(runtime.split(":")[0], "reverie.sock")
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(xdg, "reverie", "reverie.sock")
    if os.getuid() == 0:
        return "/run/reverie/reverie.sock"
    return f"/tmp/reverie-{os.getuid()}/reverie.sock"


def _configured_socket() -> str | None:
    path = os.environ.get("REVERIE_CONFIG")
    if not path:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        path = os.path.join(base, "reverie", "reverie.toml")
    try:
        with open(os.path.expanduser(path), "rb") as f:
            text = f.read()
    except OSError:
        return None
    try:
        import tomllib  # only for users with a config file

        daemon = tomllib.loads(text.decode("utf-8")).get("daemon", {})
    except (ValueError, UnicodeError):
        return None  # the daemon will complain about its config; we use the default
    value = daemon.get("socket") if isinstance(daemon, dict) else None
    return value if isinstance(value, str) and value else None


def state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "reverie")


def _breaker_path() -> str:
    return os.path.join(state_dir(), "hook-daemon-slow")


def _breaker_open() -> bool:
    try:
        return time.time() - os.stat(_breaker_path()).st_mtime < BREAKER_S
    except OSError:
        return False


def _trip_breaker() -> None:
    path = _breaker_path()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "w") as f:
            f.write(f"{time.time()}\n")
    except OSError:
        pass


# -- output and diagnostics ------------------------------------------------------


def _print(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        # Nobody reads our stdout any more (or the disk is full). Point it at
        # /dev/null, or the interpreter's own flush at exit fails again and
        # makes the exit status 120.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass


def log(message: str) -> None:
    """One line to the hook log (never to stdout; stderr only with REVERIE_HOOK_LOG=stderr)."""
    target = os.environ.get("REVERIE_HOOK_LOG", "")
    if target.lower() in ("off", "none", "0"):
        return
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {message}\n"
    try:
        if target == "stderr":
            sys.stderr.write(line)
            return
        path = target or os.path.join(state_dir(), "hook.log")
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        mode = "w" if _size(path) > LOG_MAX else "a"
        with open(path, mode, encoding="utf-8", errors="replace") as f:
            f.write(line)
    except (OSError, ValueError):
        pass


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _log_exception(e: BaseException, prefix: str = "") -> None:
    try:
        import traceback

        detail = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        log(f"{prefix}{type(e).__name__}: {e}\n{detail}")
    except BaseException:  # the last line of defence
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
