"""`reverie dreams run|undo|status`: the consolidation phases, by hand and at a glance."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from reverie.rpc._cli_base import common, emit_json, one_line
from reverie.rpc.client import Client
from reverie.rpc.proto_dreams import (
    DreamPlan,
    DreamsRun,
    DreamsRunResult,
    DreamsStatus,
    DreamsStatusResult,
    DreamsUndo,
    RunReport,
    UndoReport,
)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _fmt(args: argparse.Namespace) -> str:
    return "json" if args.json else str(args.format)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


# -- reverie dreams run ---------------------------------------------------------------


def _report_text(r: RunReport) -> str:
    lines = [
        f"run {r.run_id}: {r.phase} {r.status} in {r.duration_ms} ms ({r.trigger})",
        f"  items {r.items_processed}, planned {r.planned}, applied {_counts(r.counts)}",
    ]
    if r.notes:
        lines.append(f"  {one_line(r.notes)}")
    lines += [f"  error: {one_line(e)}" for e in r.errors]
    if r.status == "completed":
        lines.append(f"  undo with: reverie dreams undo {r.run_id}")
    return "\n".join(lines)


def _plan_text(p: DreamPlan, limit: int = 20) -> str:
    lines = [
        f"dry run: {p.phase} would apply {len(p.ops)} ops over {p.items} memories "
        f"({_counts(p.counts)}); nothing was written",
    ]
    if p.notes:
        lines.append(f"  {one_line(p.notes)}")
    for op in p.ops[:limit]:
        lines.append(f"  {_op_text(op)}")
    if len(p.ops) > limit:
        lines.append(f"  ... {len(p.ops) - limit} more (--format json shows all)")
    return "\n".join(lines)


def _op_text(op: dict[str, Any]) -> str:
    kind = op.get("type", "?")
    if kind == "create_summary":
        sources = op.get("sources", [])
        return (
            f"create_summary over {len(sources)} memories: {one_line(op.get('content', ''), 100)}"
        )
    if kind == "set_tier":
        return f"set_tier #{op.get('memory_id')} {op.get('from_tier')} -> {op.get('to_tier')}"
    if kind == "set_meta":
        value = one_line(str(op.get("value")), 100)
        return f"set_meta #{op.get('memory_id')} {op.get('key')} = {value}"
    return one_line(str(op), 140)


def cmd_run(args: argparse.Namespace, client: Client) -> int:
    res: DreamsRunResult = client.call(DreamsRun(phase=args.phase, dry_run=args.dry_run))
    if _fmt(args) == "json":
        emit_json(res)
    elif res.plan is not None:
        print(_plan_text(res.plan))
    elif res.report is not None:
        print(_report_text(res.report))
    return 0 if res.report is None or res.report.status == "completed" else 1


# -- reverie dreams undo --------------------------------------------------------------


def cmd_undo(args: argparse.Namespace, client: Client) -> int:
    res: UndoReport = client.call(DreamsUndo(run_id=args.run_id))
    if args.json:
        emit_json(res)
    else:
        print(
            f"undid run {res.run_id} ({res.phase}): {res.reversed} ops reversed, "
            f"{res.conflicts} left alone (changed since), {res.duration_ms} ms"
        )
    return 0


# -- reverie dreams status ------------------------------------------------------------


def _status_rows(s: DreamsStatusResult) -> list[list[str]]:
    rows = []
    for p in s.phases:
        last = p.last_run
        rows.append(
            [
                p.phase + ("" if p.available else " (not built yet)"),
                "running" if p.running else "idle",
                str(p.runs),
                f"{p.total_duration_ms} ms",
                str(p.items),
                f"#{last.id} {last.status} {_when(last.started_at)}" if last else "-",
                _when(p.next_run) if p.schedule else "not scheduled",
                "-" if p.backlog is None else f"{p.backlog} {p.backlog_what}",
            ]
        )
    return rows


_HEADERS = ["phase", "state", "runs", "duration", "items", "last run", "next run", "backlog"]


def _lock_text(s: DreamsStatusResult) -> str:
    lk = s.lock
    if lk is None:
        return "lock: never taken"
    state = f"held by {lk.owner} until {_when(lk.expires_at)}" if lk.held else "free"
    return f"lock: {state} (last owner {lk.owner}, token {lk.token})"


def _warnings(s: DreamsStatusResult) -> list[str]:
    return [f"{p.phase}: {p.stuck}" for p in s.phases if p.stuck]


def status_text(s: DreamsStatusResult) -> str:
    rows = [_HEADERS, *_status_rows(s)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADERS))]
    out = [f"dreams (preset {s.preset}), last {s.window_hours:g} h:"]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    out.append(_lock_text(s))
    out += [f"warning: {w}" for w in _warnings(s)]
    return "\n".join(line.rstrip() for line in out)


def status_markdown(s: DreamsStatusResult) -> str:
    out = [f"## Dreams (preset {s.preset}, last {s.window_hours:g} h)", ""]
    out.append("| " + " | ".join(_HEADERS) + " |")
    out.append("|" + "---|" * len(_HEADERS))
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _status_rows(s)]
    out += ["", _lock_text(s)]
    out += [f"\n> **Warning:** {w}" for w in _warnings(s)]
    return "\n".join(out)


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    res: DreamsStatusResult = client.call(DreamsStatus(window_hours=args.window_hours))
    fmt = _fmt(args)
    if fmt == "json":
        emit_json(res)
    elif fmt == "markdown":
        print(status_markdown(res))
    else:
        print(status_text(res))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    """--socket and --json on each subcommand too, without clobbering the group's.

    argparse copies a subparser's defaults over what the parent parsed, so
    these default to "absent" (as rpc/cli_episodes.py does).
    """
    p.add_argument("--socket", default=argparse.SUPPRESS, help="daemon socket")
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON output"
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dreams = sub.add_parser("dreams", help="consolidation phases: run now, undo a run, status")
    common(dreams)
    dsub = dreams.add_subparsers(dest="dreams_command", required=True, metavar="COMMAND")

    p = dsub.add_parser("run", help="run a phase now and wait")
    _common(p)
    p.add_argument("--phase", required=True, help="light-sleep, rem or deep-sleep (camelCase ok)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    p.set_defaults(run=cmd_run)

    p = dsub.add_parser("undo", help="reverse a run exactly (its ops, newest first)")
    _common(p)
    p.add_argument("run_id", type=int, help="the run's id (from `dreams run` or `dreams status`)")
    p.set_defaults(run=cmd_undo)

    p = dsub.add_parser("status", help="per phase: runs, last and next run, lock, backlog")
    _common(p)
    p.add_argument(
        "--window-hours", type=float, default=24.0, help="count runs this far back (default 24)"
    )
    p.add_argument(
        "--format", choices=["text", "json", "markdown"], default="text", help="output format"
    )
    p.set_defaults(run=cmd_status)
