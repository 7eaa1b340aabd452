"""`reverie episode start|step|end|show|list|similar`: episodes from the command line.

The workspace defaults to the current directory's (rpc/workspace.py), as
for every command that acts on "this project".
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Literal

from reverie.errors import UsageError
from reverie.rpc._cli_base import common, emit, emit_json, one_line, parse_meta, ts
from reverie.rpc.client import Client
from reverie.rpc.proto_episodes import (
    CompleteEpisode,
    Episode,
    EpisodeContext,
    EpisodeList,
    EpisodeStarted,
    EpisodeSummary,
    GetEpisode,
    ListEpisodes,
    LogStep,
    SimilarEpisodes,
    SimilarEpisodesResult,
    StartEpisode,
    StepLogged,
)

OUTCOMES = ("success", "partial", "failure")


def _workspace(args: argparse.Namespace) -> str | None:
    """--workspace, else None with --all-workspaces, else the current directory's."""
    if getattr(args, "all_workspaces", False):
        return None
    if args.workspace:
        return str(args.workspace)
    from reverie.rpc.workspace import workspace_for

    return workspace_for(None).id


def _context(args: argparse.Namespace) -> EpisodeContext:
    return EpisodeContext(
        language=args.language or "",
        framework=args.framework or "",
        domain=args.domain or "",
        tags=list(args.tag),
    )


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params:
        try:
            loaded = json.loads(args.params)
        except ValueError as e:
            raise UsageError(f"--params is not JSON: {e}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--params must be a JSON object")
        params.update(loaded)
    params.update(parse_meta(args.param, "--param"))
    return params


def _reward(ep: EpisodeSummary) -> str:
    return "-" if ep.reward is None else f"{ep.reward:.2f}"


def _line(ep: EpisodeSummary) -> str:
    state = ep.outcome or "open"
    return (
        f"#{ep.id:<5} {state:<8} reward {_reward(ep):<5} {ep.step_count:>3} steps  "
        f"[{ep.task_type}] {one_line(ep.description, 100)}"
    )


# -- commands ---------------------------------------------------------------------


def cmd_start(args: argparse.Namespace, client: Client) -> int:
    req = StartEpisode(
        description=args.description,
        workspace=_workspace(args) or "",
        context=_context(args),
        task_type=args.type,
        session_id=args.session,
    )
    res: EpisodeStarted = client.call(req)
    return emit(args, res, res.id)


def cmd_step(args: argparse.Namespace, client: Client) -> int:
    req = LogStep(
        episode_id=args.id,
        tool=args.tool,
        action=args.action,
        parameters=_params(args),
        success=not (args.failed or args.error),
        result=args.result,
        error=args.error,
        latency_ms=args.latency_ms,
    )
    res: StepLogged = client.call(req)
    return emit(args, res, f"episode #{res.episode_id} step {res.n}")


def cmd_end(args: argparse.Namespace, client: Client) -> int:
    ep: Episode = client.call(
        CompleteEpisode(episode_id=args.id, outcome=args.outcome, notes=args.notes)
    )
    if args.json:
        emit_json(ep)
        return 0
    failed = f", {ep.error_count} failed" if ep.error_count else ""
    print(f"episode #{ep.id}: {ep.outcome}, reward {_reward(ep)} ({ep.step_count} steps{failed})")
    return 0


def cmd_show(args: argparse.Namespace, client: Client) -> int:
    ep: Episode = client.call(GetEpisode(episode_id=args.id))
    if args.json:
        emit_json(ep)
        return 0
    print(f"#{ep.id}  {ep.outcome or 'open'}  [{ep.task_type}]  workspace {ep.workspace}")
    print(f"  started {ts(ep.started_at)}  completed {ts(ep.completed_at)}")
    ctx = ep.context
    parts = {
        "language": ctx.language,
        "framework": ctx.framework,
        "domain": ctx.domain,
        "tags": " ".join(ctx.tags),
        "session": ep.session_id or "",
    }
    shown = "  ".join(f"{k} {v}" for k, v in parts.items() if v)
    if shown:
        print(f"  {shown}")
    if ep.reward_detail is not None:
        r = ep.reward_detail
        print(
            f"  reward {r.value:.3f} = {r.base:g} x (1 - errors {r.error_penalty:.3f} "
            f"- steps {r.step_penalty:.3f} - latency {r.latency_penalty:.3f})"
        )
    print(f"  {ep.step_count} steps, {ep.error_count} failed, {ep.latency_ms} ms in tools")
    print()
    print(ep.description)
    if ep.notes:
        print(f"\nnotes: {ep.notes}")
    if ep.steps:
        print()
    for s in ep.steps:
        mark = "ok " if s.success else "ERR"
        print(f"{s.n:>4}. {mark} {s.tool}: {one_line(s.action, 100)}  ({s.latency_ms} ms)")
        if s.parameters:
            print(f"        params {one_line(json.dumps(s.parameters, ensure_ascii=False), 120)}")
        text = s.error if not s.success and s.error else s.result
        if text:
            print(f"        {one_line(text, 120)}")
    return 0


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    status: Literal["open", "completed"] | None = (
        "open" if args.open else "completed" if args.completed else None
    )
    res: EpisodeList = client.call(
        ListEpisodes(
            workspace=_workspace(args),
            status=status,
            outcome=args.outcome,
            task_type=args.type,
            session_id=args.session,
            limit=args.limit,
            before_id=args.before,
        )
    )
    if args.json:
        emit_json(res)
        return 0
    if not res.episodes:
        print("no episodes")
    for ep in res.episodes:
        print(_line(ep))
    if res.next_before_id is not None:
        print(f"(more: --before {res.next_before_id})")
    return 0


def cmd_similar(args: argparse.Namespace, client: Client) -> int:
    res: SimilarEpisodesResult = client.call(
        SimilarEpisodes(
            description=args.description,
            context=_context(args),
            task_type=args.type,
            workspace=_workspace(args),
            outcomes=list(dict.fromkeys(args.outcome)),
            limit=args.limit,
        )
    )
    if args.json:
        emit_json(res)
        return 0
    if not res.matches:
        print("no similar episodes")
    for m in res.matches:
        print(f"{m.score:6.3f}  {_line(m.episode)}")
        for what in m.worked:
            print(f"          worked: {what}")
        for what in m.failed:
            print(f"          failed: {what}")
    return 0


# -- parser -----------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    """--socket and --json again on each subcommand, without clobbering the parent's.

    argparse copies a subparser's defaults over what the parent parsed, so
    these default to "absent": `episode --json list` and `episode list --json`
    both work.
    """
    p.add_argument("--socket", default=argparse.SUPPRESS, help="daemon socket")
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON output"
    )


def _context_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", help="task type: code_generation, debugging, refactoring, ...")
    p.add_argument("--language", help="e.g. python")
    p.add_argument("--framework", help="e.g. trio")
    p.add_argument("--domain", help="e.g. networking")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")


def _where_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", help="default: the current directory's workspace")
    p.add_argument("--all-workspaces", action="store_true", help="every workspace")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ep = sub.add_parser("episode", help="episodes: a task's steps, outcome and reward")
    common(ep)
    cmds = ep.add_subparsers(dest="episode_command", metavar="SUBCOMMAND", required=True)

    p = cmds.add_parser("start", help="start an episode for a task and print its id")
    _common(p)
    p.add_argument("description", help="what the task is")
    _context_args(p)
    p.set_defaults(type="other")
    p.add_argument("--session", help="the agent session this episode belongs to")
    p.add_argument("--workspace", help="default: the current directory's workspace")
    p.set_defaults(run=cmd_start, all_workspaces=False)

    p = cmds.add_parser("step", help="log a step of an open episode")
    _common(p)
    p.add_argument("id", type=int, help="the episode")
    p.add_argument("tool", help="what did it (bash, edit, a tool's name)")
    p.add_argument("action", nargs="?", default="", help="what it did")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--params", metavar="JSON", help="parameters as one JSON object")
    p.add_argument("--result", default="", help="what came out (trimmed when stored)")
    p.add_argument("--error", default="", help="the error: marks the step failed")
    p.add_argument("--failed", action="store_true", help="the step failed")
    p.add_argument("--latency-ms", type=int, default=0, help="how long it took")
    p.set_defaults(run=cmd_step)

    p = cmds.add_parser("end", help="complete an episode with its outcome; prints the reward")
    _common(p)
    p.add_argument("id", type=int, help="the episode")
    p.add_argument("outcome", choices=OUTCOMES)
    p.add_argument("--notes", default="", help="what was learned")
    p.set_defaults(run=cmd_end)

    p = cmds.add_parser("show", help="one episode with its steps")
    _common(p)
    p.add_argument("id", type=int)
    p.set_defaults(run=cmd_show)

    p = cmds.add_parser("list", help="episodes, most recent first")
    _common(p)
    _where_args(p)
    p.add_argument("--outcome", choices=OUTCOMES)
    state = p.add_mutually_exclusive_group()
    state.add_argument("--open", action="store_true", help="only episodes not completed")
    state.add_argument("--completed", action="store_true", help="only completed episodes")
    p.add_argument("--type", help="only this task type")
    p.add_argument("--session", help="only this session's")
    p.add_argument("--limit", type=int, default=20, help="1-1000 (default 20)")
    p.add_argument("--before", type=int, help="page: episodes with a smaller id")
    p.set_defaults(run=cmd_list)

    p = cmds.add_parser("similar", help="completed episodes like a new task, best first")
    _common(p)
    p.add_argument("description", help="the new task")
    _context_args(p)
    _where_args(p)
    p.add_argument("--outcome", action="append", default=[], choices=OUTCOMES, help="repeatable")
    p.add_argument("--limit", type=int, default=5, help="1-100 (default 5)")
    p.set_defaults(run=cmd_similar)
