"""Commands for sessions, the world state, claims, the sitrep and the briefing.

The workspace defaults to the current directory's (rpc/workspace.py), the
session to ``$REVERIE_SESSION_ID``, so that a script can do::

    export REVERIE_SESSION_ID=$(reverie session start "port the parser")
    reverie claim src/parser.py && ... && reverie session end --summary "done"

Claim paths are taken relative to the working tree's top level, so sessions
in different subdirectories, clones or worktrees of one repository agree.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from reverie.errors import Conflict, UsageError
from reverie.rpc._cli_base import emit, emit_json, fail, one_line, ts
from reverie.rpc.client import Client
from reverie.rpc.proto_sessions import (
    BRIEF_MAX_CHARS,
    SITREP_MAX_CHARS,
    Brief,
    BriefResult,
    Claim,
    ClaimInfo,
    ClaimResult,
    Claims,
    ClaimsResult,
    EndStatus,
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
from reverie.rpc.workspace import workspace_for

SESSION_ENV = "REVERIE_SESSION_ID"
# A claim refused, or the world state changed since the version given.
EXIT_HELD = 5


Handler = Callable[[argparse.Namespace, Client], int]


def _conflicts(run: Handler) -> Handler:
    """A conflict (a changed world state, an ended session) exits with EXIT_HELD."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace, client: Client) -> int:
        try:
            return run(args, client)
        except Conflict as e:
            fail(e.message, EXIT_HELD)

    return wrapped


# -- shared options -------------------------------------------------------------------


def _common_sub(p: argparse.ArgumentParser) -> None:
    """--socket/--json on a subcommand, without overriding the parent command's values."""
    p.add_argument("--socket", default=argparse.SUPPRESS, help="daemon socket")
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", help="daemon socket (default: $REVERIE_SOCKET, config, runtime dir)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _workspace_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workspace", help="workspace id (default: the current directory's git repository)"
    )


def _session_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--session",
        "-s",
        metavar="ID",
        help=f"the session (default: ${SESSION_ENV})",
    )


def _ws(args: argparse.Namespace) -> str:
    return str(args.workspace) if args.workspace else workspace_for(None).id


def _session(args: argparse.Namespace) -> str:
    sid = args.session or os.environ.get(SESSION_ENV, "")
    if not sid:
        raise UsageError(
            f"which session? pass --session ID or set {SESSION_ENV} "
            "(`reverie session start` prints a new session's id)"
        )
    return str(sid)


def _optional_session(args: argparse.Namespace) -> str | None:
    sid = args.session or os.environ.get(SESSION_ENV, "")
    return str(sid) if sid else None


def _text_arg(value: str) -> str:
    """A text argument; `-` reads standard input."""
    return sys.stdin.read() if value == "-" else value


# -- sessions ---------------------------------------------------------------------


def _print_session(s: SessionInfo) -> None:
    state = s.status + (" (stale)" if s.stale else "")
    print(
        f"{s.id}  {state}  workspace {s.workspace}"
        + (f"  harness {s.harness}" if s.harness else "")
    )
    print(f"  started {ts(s.started_at)}  last seen {ts(s.last_seen_at)}  ended {ts(s.ended_at)}")
    if s.description:
        print(f"  description: {s.description}")
    if s.progress:
        print(f"  progress: {s.progress}")
    if s.summary:
        print(f"  summary: {s.summary}")


def cmd_session_start(args: argparse.Namespace, client: Client) -> int:
    res: SessionStartResult = client.call(
        SessionStart(
            workspace=_ws(args),
            session_id=args.id,
            harness=args.harness,
            description=_text_arg(args.description) if args.description else "",
        )
    )
    if args.json:
        emit_json(res)
    else:
        print(res.session.id)
        if not res.created:
            sys.stderr.write(f"reverie: resumed session {res.session.id}\n")
    return 0


def cmd_session_heartbeat(args: argparse.Namespace, client: Client) -> int:
    note = _text_arg(args.note) if args.note is not None else None
    res: SessionInfo = client.call(SessionHeartbeat(session_id=_session(args), progress=note))
    return emit(args, res, f"{res.id} seen {ts(res.last_seen_at)}")


def cmd_session_end(args: argparse.Namespace, client: Client) -> int:
    summary = _text_arg(args.summary) if args.summary else ""
    status: EndStatus = "abandoned" if args.abandon else "completed"
    res: SessionInfo = client.call(
        SessionEnd(session_id=_session(args), summary=summary, status=status)
    )
    return emit(args, res, f"{res.id} {res.status}")


def cmd_session_show(args: argparse.Namespace, client: Client) -> int:
    res: SessionInfo = client.call(SessionGet(session_id=_session(args)))
    if args.json:
        emit_json(res)
    else:
        _print_session(res)
    return 0


def cmd_session_list(args: argparse.Namespace, client: Client) -> int:
    which: Literal["active", "recent", "all"] = (
        "all" if args.all else "recent" if args.recent else "active"
    )
    ws = None if args.all_workspaces else _ws(args)
    res: SessionListResult = client.call(SessionList(workspace=ws, which=which, limit=args.limit))
    if args.json:
        emit_json(res)
        return 0
    if not res.sessions:
        print(f"no {'' if which == 'all' else which + ' '}sessions")
    for s in res.sessions:
        state = "stale" if s.stale else s.status
        text = s.summary if s.status != "active" and s.summary else s.description
        where = f"  [{s.workspace}]" if ws is None else ""
        print(f"{s.id}  {state:<9} {ts(s.last_seen_at)}  {one_line(text or '-', 100)}{where}")
    return 0


def cmd_session_log(args: argparse.Namespace, client: Client) -> int:
    res: SessionLogEntry = client.call(
        SessionLog(
            session_id=_session(args),
            message=_text_arg(args.message),
            level=args.level,
            kind=args.kind,
        )
    )
    return emit(args, res, res.id)


def cmd_session_logs(args: argparse.Namespace, client: Client) -> int:
    res: SessionLogsResult = client.call(
        SessionLogs(session_id=_session(args), limit=args.limit, after_id=args.after)
    )
    if args.json:
        emit_json(res)
        return 0
    for e in res.entries:
        print(f"{e.id:<6} {ts(e.at)}  {e.level:<7} {e.kind:<8} {e.message}")
    return 0


# -- world state --------------------------------------------------------------------


def cmd_world(args: argparse.Namespace, client: Client) -> int:
    if args.action == "show":
        if args.file is not None:
            raise UsageError("`reverie world show` takes no file (did you mean `world set`?)")
        res: WorldState = client.call(WorldGet(workspace=_ws(args), version=args.version))
        if args.json:
            emit_json(res)
        elif res.version == 0:
            sys.stderr.write("reverie: no world state yet (`reverie world set FILE` sets it)\n")
        else:
            sys.stdout.write(res.content if res.content.endswith("\n") else res.content + "\n")
        return 0
    if args.file is None:
        raise UsageError("`reverie world set` needs a FILE (or - for standard input)")
    content = _read_file(args.file)
    by = args.by or _optional_session(args) or _user()
    res = client.call(
        WorldSet(workspace=_ws(args), content=content, updated_by=by, if_version=args.if_version)
    )
    return emit(args, res, f"world state version {res.version}")


def _read_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text: {e}") from e


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (OSError, KeyError):
        return ""


# -- claims -------------------------------------------------------------------------


def _resource(arg: str, literal: bool) -> str:
    """A path, relative to the current working tree's top level when inside it."""
    if literal:
        return arg
    absolute = Path(arg).expanduser().resolve(strict=False)
    root = Path(workspace_for(None).root)
    try:
        rel = absolute.relative_to(root).as_posix()
    except ValueError:
        return absolute.as_posix()
    return rel or "."


def _claim_line(c: ClaimInfo) -> str:
    who = f" ({one_line(c.session_description, 60)})" if c.session_description else ""
    note = f"  — {one_line(c.note, 80)}" if c.note else ""
    return f"{c.resource}  held by {c.session_id}{who} since {ts(c.claimed_at)}{note}"


def cmd_claim(args: argparse.Namespace, client: Client) -> int:
    res: ClaimResult = client.call(
        Claim(
            workspace=_ws(args),
            resource=_resource(args.path, args.literal),
            session_id=_session(args),
            note=args.note,
        )
    )
    if args.json:
        emit_json(res)
    elif res.granted:
        print(f"claimed {res.resource}" + (" (already yours)" if res.already else ""))
    else:
        sys.stderr.write(f"reverie: {res.resource} is held:\n")
        for h in res.holders:
            sys.stderr.write(f"  {_claim_line(h)}\n")
    return 0 if res.granted else EXIT_HELD


def cmd_release(args: argparse.Namespace, client: Client) -> int:
    res: ReleaseResult = client.call(
        Release(
            workspace=_ws(args),
            resource=_resource(args.path, args.literal),
            session_id=_optional_session(args) if args.force else _session(args),
            force=args.force,
        )
    )
    if args.json:
        emit_json(res)
    elif res.released:
        print(f"released {res.resource}")
    elif res.holder is not None:
        sys.stderr.write(f"reverie: not yours: {_claim_line(res.holder)} (--force releases it)\n")
    else:
        sys.stderr.write(f"reverie: {res.resource} was not claimed\n")
    return 0 if res.released or res.holder is None else EXIT_HELD


def cmd_claims(args: argparse.Namespace, client: Client) -> int:
    resource = _resource(args.path, args.literal) if args.path else None
    res: ClaimsResult = client.call(
        Claims(workspace=_ws(args), resource=resource, session_id=args.session)
    )
    if args.json:
        emit_json(res)
        return 0
    if not res.claims:
        print("no claims held" + (f" on {resource}" if resource else ""))
    for c in res.claims:
        print(_claim_line(c))
    return 0


# -- sitrep and brief ------------------------------------------------------------------


def cmd_sitrep(args: argparse.Namespace, client: Client) -> int:
    res: SitrepResult = client.call(
        Sitrep(workspace=_ws(args), budget=args.budget, recent=args.recent)
    )
    return emit(args, res, res.text)


def cmd_brief(args: argparse.Namespace, client: Client) -> int:
    prompt = _text_arg(args.prompt) if args.prompt else ""
    res: BriefResult = client.call(
        Brief(
            workspace=_ws(args),
            prompt=prompt,
            session_id=_optional_session(args),
            budget=args.budget,
        )
    )
    return emit(args, res, res.text)


def _budget(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 200 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between 200 and {maximum}")
        return value

    return parse


# -- parser -----------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_session(sub)

    p = sub.add_parser(
        "world", help="show or replace the workspace's world-state document (markdown)"
    )
    _common(p)
    p.add_argument("action", nargs="?", choices=["show", "set"], default="show")
    p.add_argument("file", nargs="?", help="with set: the new document ('-' reads stdin)")
    _workspace_opt(p)
    _session_opt(p)
    p.add_argument("--version", type=int, help="with show: an earlier version")
    p.add_argument(
        "--if-version",
        type=int,
        metavar="N",
        help=f"with set: only if the current version is N (else exit {EXIT_HELD})",
    )
    p.add_argument("--by", help="who is writing (default: the session, else the user name)")
    p.set_defaults(run=_conflicts(cmd_world))

    p = sub.add_parser("claim", help="claim a path (or name) for the session")
    _common(p)
    p.add_argument("path", help="a file or directory (relative to the working tree), or a name")
    _workspace_opt(p)
    _session_opt(p)
    p.add_argument("--note", default="", help="why, or for how long")
    p.add_argument("--literal", action="store_true", help="take PATH as a name, as typed")
    p.set_defaults(run=_conflicts(cmd_claim))

    p = sub.add_parser("release", help="release a claim")
    _common(p)
    p.add_argument("path")
    _workspace_opt(p)
    _session_opt(p)
    p.add_argument("--force", action="store_true", help="release it whoever holds it")
    p.add_argument("--literal", action="store_true", help="take PATH as a name, as typed")
    p.set_defaults(run=_conflicts(cmd_release))

    p = sub.add_parser("claims", help="list held claims, or who holds a path")
    _common(p)
    p.add_argument("path", nargs="?", help="only claims on, above or below this path")
    _workspace_opt(p)
    p.add_argument("--session", "-s", metavar="ID", help="only this session's claims")
    p.add_argument("--literal", action="store_true", help="take PATH as a name, as typed")
    p.set_defaults(run=_conflicts(cmd_claims))

    p = sub.add_parser(
        "sitrep", help="world state, active sessions, claims and recent sessions, in a budget"
    )
    _common(p)
    _workspace_opt(p)
    p.add_argument(
        "--budget", type=_budget(SITREP_MAX_CHARS), default=4000, help="characters (default 4000)"
    )
    p.add_argument("--recent", type=int, default=5, help="ended sessions to show (default 5)")
    p.set_defaults(run=_conflicts(cmd_sitrep))

    p = sub.add_parser("brief", help="a briefing for a new session: world, memories, sessions")
    _common(p)
    _workspace_opt(p)
    _session_opt(p)
    p.add_argument("--prompt", help="focus the memories on this ('-' reads stdin)")
    p.add_argument(
        "--budget",
        type=_budget(BRIEF_MAX_CHARS),
        default=4000,
        help=f"characters (default 4000, at most {BRIEF_MAX_CHARS})",
    )
    p.set_defaults(run=_conflicts(cmd_brief))


def _add_session(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("session", help="register, heartbeat and end sessions; their logs")
    _common(group)
    cmds = group.add_subparsers(dest="session_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help)
        _common_sub(p)
        return p

    p = add("start", "register a session and print its id")
    p.add_argument("description", nargs="?", help="what it sets out to do ('-' reads stdin)")
    _workspace_opt(p)
    p.add_argument("--id", help="use this id (the same id again resumes the session)")
    p.add_argument("--harness", default="", help="e.g. claude-code, cli")
    p.set_defaults(run=_conflicts(cmd_session_start))

    p = add("heartbeat", "mark the session alive, optionally with a progress note")
    _session_opt(p)
    p.add_argument("--note", help="how far it got ('-' reads stdin)")
    p.set_defaults(run=_conflicts(cmd_session_heartbeat))

    p = add("end", "complete the session with a summary of what it did")
    _session_opt(p)
    p.add_argument("--summary", help="what it did ('-' reads stdin)")
    p.add_argument("--abandon", action="store_true", help="mark it abandoned, not completed")
    p.set_defaults(run=_conflicts(cmd_session_end))

    p = add("show", "one session with all its fields")
    _session_opt(p)
    p.set_defaults(run=_conflicts(cmd_session_show))

    p = add("list", "active sessions of the workspace (stale ones marked)")
    _workspace_opt(p)
    p.add_argument("--recent", action="store_true", help="ended sessions, newest first")
    p.add_argument("--all", action="store_true", help="every session")
    p.add_argument("--all-workspaces", action="store_true", help="not only this workspace")
    p.add_argument("--limit", type=int, default=50, help="at most this many (1-1000)")
    p.set_defaults(run=_conflicts(cmd_session_list))

    p = add("log", "append a line to the session's log")
    p.add_argument("message", help="the line ('-' reads stdin)")
    _session_opt(p)
    p.add_argument("--level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--kind", default="note", help="e.g. note, progress, decision (default note)")
    p.set_defaults(run=_conflicts(cmd_session_log))

    p = add("logs", "read the session's log, oldest first")
    _session_opt(p)
    p.add_argument("--limit", type=int, default=50, help="the last N lines (1-1000)")
    p.add_argument("--after", type=int, metavar="ID", help="the lines after this one instead")
    p.set_defaults(run=_conflicts(cmd_session_logs))
