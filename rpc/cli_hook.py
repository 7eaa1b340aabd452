"""`reverie hook` and `reverie install`: the harness integration commands.

`reverie hook ...` normally never reaches this parser: rpc/cli.py's main()
and `python -m reverie` hand it to rpc/hook.py first (no argparse, which
would also exit 2 on a bad argument: Claude Code reads exit 2 as "block this
prompt"). The parser below gives `--help` and the documentation.
"""

from __future__ import annotations

import argparse
import sys

from reverie.rpc._cli_base import common, emit_json


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "hook",
        help="run as a harness hook: post the JSON on stdin as an event (always exits 0)",
        description=(
            "Read one hook payload (JSON) on stdin and post it to the daemon; if the "
            "daemon is unreachable the event goes to the spool. For Claude Code, "
            "SessionStart prints the briefing and UserPromptSubmit the relevant "
            "memories as hook JSON. Always exits 0. REVERIE_CAPTURE=off records nothing."
        ),
    )
    common(p)
    p.add_argument(
        "harness",
        choices=["claude-code", "generic"],
        help="claude-code: a Claude Code hook (any event); generic: any harness",
    )
    p.add_argument("--event", help="generic: the event's name (e.g. prompt, tool_use)")
    p.add_argument("--harness", dest="harness_name", help="generic: the harness (default generic)")
    p.add_argument("--session", help="generic: the session id")
    p.add_argument(
        "--workspace", help="generic: a directory (or a workspace id) (default: payload cwd, .)"
    )
    p.add_argument("--key", help="generic: the idempotency key (default: a hash of the payload)")
    p.set_defaults(run=cmd_hook, needs_client=False)

    p = sub.add_parser(
        "install",
        help="wire reverie into a harness (Claude Code's hooks) or systemd (units)",
        description=(
            "claude-code: merge reverie's hook entries into Claude Code's settings.json, "
            "leaving every other hook and setting as it is; run again to update, "
            "--uninstall to remove exactly what was added. The previous file is kept as "
            "settings.json.reverie.bak. systemd: write reverie.service and reverie.socket "
            "(--user, the default, or --system with its sysusers.d entry) with this "
            "machine's paths and print the systemctl commands to run; runs nothing."
        ),
    )
    common(p)
    p.add_argument("target", choices=["claude-code", "systemd"], help="what to wire")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--user",
        dest="scope",
        action="store_const",
        const="user",
        help="~/.claude/settings.json: every project (default)",
    )
    scope.add_argument(
        "--project",
        dest="scope",
        action="store_const",
        const="project",
        help="<git top level>/.claude/settings.json (shared through git)",
    )
    scope.add_argument(
        "--local",
        dest="scope",
        action="store_const",
        const="local",
        help="<git top level>/.claude/settings.local.json (this checkout, not in git)",
    )
    # -- systemd (rpc/install_systemd.py)
    scope.add_argument(
        "--system",
        dest="scope",
        action="store_const",
        const="system",
        help="systemd: a system service (/etc/systemd/system), run as the user reverie",
    )
    p.add_argument("--unit-dir", help="systemd: write the units here instead")
    p.add_argument("--prefix", help="systemd: stage every file under this root (packaging)")
    p.add_argument("--uninstall", action="store_true", help="remove reverie's hook entries")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.set_defaults(run=cmd_install, needs_client=False, scope="user")


def cmd_hook(args: argparse.Namespace) -> int:
    from reverie.rpc import hook

    options = {
        name: value
        for name, value in (
            ("socket", args.socket),
            ("event", args.event),
            ("harness", args.harness_name),
            ("session", args.session),
            ("workspace", args.workspace),
            ("key", args.key),
        )
        if value
    }
    return hook.run(args.harness, options)


def cmd_install(args: argparse.Namespace) -> int:
    from reverie.rpc import install_claude

    if args.target == "systemd":  # -- systemd (rpc/install_systemd.py)
        from reverie.rpc import install_systemd

        return install_systemd.cmd(args)
    if args.scope == "system" or args.unit_dir or args.prefix:
        from reverie.errors import UsageError

        raise UsageError("--system, --unit-dir and --prefix are for `install systemd`")
    plan, backup = install_claude.run(args.scope, uninstall=args.uninstall, dry_run=args.dry_run)
    if args.json:
        emit_json(
            {
                "settings": str(plan.path),
                "action": plan.action,
                "dry_run": args.dry_run,
                "command": plan.command,
                "added": plan.added,
                "updated": plan.updated,
                "removed": plan.removed,
                "backup": str(backup) if backup else None,
                "content": plan.settings if args.dry_run else None,
            }
        )
        return 0
    would = "would be " if args.dry_run else ""
    if not plan.changed:
        state = "not installed" if args.uninstall else "already installed"
        print(f"reverie's hooks are {state} in {plan.path}; nothing to do")
        return 0
    if plan.removed:
        print(f"{would}removed reverie's hook from {len(plan.removed)} events in {plan.path}")
    if plan.added:
        print(f"{would}added reverie's hook for {len(plan.added)} events to {plan.path}:")
        print(f"  {', '.join(plan.added)}")
    if plan.updated:
        print(f"{would}updated the hook command for {len(plan.updated)} events")
    if not args.uninstall:
        print(f"command: {plan.command}")
    if args.dry_run:
        sys.stdout.write(install_claude.render(plan.settings))
    elif backup:
        print(f"previous settings kept in {backup}")
    if not args.uninstall and not args.dry_run:
        print("new Claude Code sessions pick it up")
        if not _daemon_running(args.socket):
            print(
                "the daemon is not running: start it (`reverie daemon`, or as a service: "
                "packaging/systemd); until then the hooks spool their events"
            )
    return 0


def _daemon_running(socket: str | None) -> bool:
    from reverie.errors import ReverieError
    from reverie.rpc.client import Client

    try:
        with Client(socket, timeout=2.0, name="reverie-install") as client:
            client.ping()
        return True
    except (ReverieError, OSError):
        return False
