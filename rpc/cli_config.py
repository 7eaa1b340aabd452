"""`reverie config show` and `reverie config check`.

`show` computes the effective configuration here, with the loader the daemon
uses (daemon/config_sources.py), and says where each value came from;
`show --running` asks the daemon instead (what it runs with, its last reload
and the keys waiting for a restart). `check` validates a file before
`systemctl reload` and names the bad key. Secrets are printed as "***".
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from reverie import __version__
from reverie.daemon import config_sources as cs
from reverie.daemon.config import Config, config_file
from reverie.errors import ConfigError
from reverie.rpc._cli_base import EXIT_ERROR, common, emit_json
from reverie.rpc.client import Client
from reverie.rpc.proto_config import ConfigShow, ConfigShowResult


def _rows(cfg: Config, source: Any) -> list[tuple[str, Any, str]]:
    return [(key, value, source(key)) for key, value in cs.shown(cfg)]


def _ago(at: float) -> str:
    return dt.datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def cmd_show(args: argparse.Namespace) -> int:
    json_out = getattr(args, "json", False)
    if args.running:
        with Client(getattr(args, "socket", None), name=f"reverie-cli/{__version__}") as client:
            res: ConfigShowResult = client.call(ConfigShow())
        if json_out:
            emit_json(res)
            return 0
        print(f"# running config, file: {res.file or 'none'}; loaded {_ago(res.loaded_at)}")
        r = res.last_reload
        if r is not None:
            state = "ok" if r.ok else f"FAILED: {r.error}"
            print(f"# last reload {_ago(r.at)}: {state}; applied: {', '.join(r.applied) or '-'}")
        if res.pending_restart:
            print(f"# needs a restart to take effect: {', '.join(res.pending_restart)}")
        flat = dict(_flatten(res.config))
        print(cs.render([(k, v, res.sources.get(k, "default")) for k, v in flat.items()]), end="")
        return 0
    spec = cs.LoadSpec(
        Path(args.config) if args.config else None,
        cs.Flags(
            data_dir=args.data_dir or "",
            socket=getattr(args, "socket", None) or "",
            log_level=args.log_level or "",
        ),
    )
    sourced = spec.load_sourced()
    rows = _rows(sourced.config, sourced.source)
    if json_out:
        emit_json(
            {
                "file": str(sourced.file) if sourced.file else None,
                "config": cs.nest([(key, value) for key, value, _ in rows]),
                "sources": {key: source for key, _, source in rows},
            }
        )
        return 0
    print(f"# effective config, file: {sourced.file or 'none (defaults and environment)'}")
    print(cs.render(rows), end="")
    return 0


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        # Leaves that are maps (dreams.phases, kind_weights) are known by name.
        if isinstance(v, dict) and key not in _MAP_KEYS:
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


_MAP_KEYS = frozenset(k for k, v in cs.leaves(Config()) if isinstance(v, dict))


def cmd_check(args: argparse.Namespace) -> int:
    json_out = getattr(args, "json", False)
    try:
        if args.file:
            path: Path | None = Path(args.file)
            sourced = cs.LoadSpec(path).load_sourced()
        else:
            path = config_file()
            sourced = cs.LoadSpec().load_sourced()
    except ConfigError as e:
        key = cs.bad_key(e.message)
        if json_out:
            emit_json({"ok": False, "file": args.file, "key": key, "error": e.message})
        else:
            sys.stderr.write(f"reverie: error: {e.message}\n")
            if key:
                sys.stderr.write(f"reverie: bad key: {key}\n")
        return EXIT_ERROR
    set_keys = sorted(k for k, s in sourced.sources.items() if s.startswith("file "))
    name = str(path) if path else None
    if json_out:
        emit_json({"ok": True, "file": name, "key": "", "error": "", "keys_set": set_keys})
    elif name:
        print(f"{name}: ok ({len(set_keys)} keys set, the rest default)")
    else:
        print("no config file: the defaults apply (and the environment)")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="show the effective configuration; check a file")
    common(p)
    csub = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")

    s = csub.add_parser(
        "show", help="the effective config, where each value came from (secrets masked)"
    )
    _common(s)
    s.add_argument("--config", help="config file (default: $REVERIE_CONFIG or XDG config)")
    s.add_argument("--data-dir", help="as `reverie daemon --data-dir` (a flag wins)")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--running",
        action="store_true",
        help="ask the daemon: its running config, last reload, keys needing a restart",
    )
    s.set_defaults(run=cmd_show, needs_client=False)

    c = csub.add_parser("check", help="validate a config file; name the bad key (exit 1)")
    _common(c)
    c.add_argument("file", nargs="?", help="default: the file the daemon would read")
    c.set_defaults(run=cmd_check, needs_client=False)


def _common(p: argparse.ArgumentParser) -> None:
    # Defaults "absent", so that the group's --socket/--json are not clobbered.
    p.add_argument(
        "--socket",
        default=argparse.SUPPRESS,
        help="the daemon's socket (show: as `reverie daemon --socket`; with --running: ask it)",
    )
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON output"
    )
