"""`reverie update ID ...` and `reverie versions ID`: overwrite a memory, list its snapshots."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reverie.errors import UsageError
from reverie.rpc._cli_base import common, emit, emit_json, one_line, parse_meta, ts
from reverie.rpc.client import Client
from reverie.rpc.proto_versions import Update, UpdateResult, Versions, VersionsResult


def _content(args: argparse.Namespace) -> str | None:
    if args.content is not None and args.content_file is not None:
        raise UsageError("give --content or --content-file, not both")
    if args.content_file is None:
        return str(args.content) if args.content is not None else None
    if args.content_file == "-":
        return sys.stdin.read()
    try:
        return Path(args.content_file).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read --content-file: {e}") from None


def cmd_update(args: argparse.Namespace, client: Client) -> int:
    content = _content(args)
    meta = parse_meta(args.meta) if args.meta else None
    if content is None and args.importance is None and args.pin is None and meta is None:
        raise UsageError("nothing to update: give --content, --importance, --pin or --meta")
    res: UpdateResult = client.call(
        Update(
            memory_id=args.id,
            content=content,
            importance=args.importance,
            pinned=args.pin,
            metadata=meta,
            reason=args.reason,
        )
    )
    text = (
        f"updated #{res.id} (the old row is version {res.version})"
        if res.changed
        else f"#{res.id} unchanged: it already was what you asked"
    )
    return emit(args, res, text)


def cmd_versions(args: argparse.Namespace, client: Client) -> int:
    res: VersionsResult = client.call(Versions(memory_id=args.id))
    if args.json:
        emit_json(res)
        return 0
    print(f"#{res.memory_id}: current version {res.current_version}, {len(res.versions)} kept")
    for v in res.versions:
        pin = " pinned" if v.pinned else ""
        why = f"  ({v.reason})" if v.reason else ""
        print(
            f"  v{v.version:<4} replaced {ts(v.replaced_at)}  importance {v.importance:.2f}"
            f"{pin}{why}"
        )
        print(f"        {one_line(v.content, 100)}")
        if args.full and v.metadata:
            print(f"        metadata {json.dumps(v.metadata, ensure_ascii=False)}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "update",
        help="overwrite a memory in place (same id); its old row is kept as a version",
    )
    common(p)
    p.add_argument("id", type=int)
    p.add_argument("--content", help="the new text")
    p.add_argument("--content-file", metavar="F", help="read the new text from F ('-': stdin)")
    p.add_argument("--importance", type=float, help="0 to 1")
    pin = p.add_mutually_exclusive_group()
    pin.add_argument("--pin", dest="pin", action="store_const", const=True, help="pin it")
    pin.add_argument("--unpin", dest="pin", action="store_const", const=False, help="unpin it")
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="K=V",
        help="set a metadata key (repeatable; JSON values keep their type; K=null removes K)",
    )
    p.add_argument("--reason", default="", help="why (kept with the snapshot)")
    p.set_defaults(run=cmd_update, pin=None)

    p = sub.add_parser("versions", help="list a memory's earlier versions, newest first")
    common(p)
    p.add_argument("id", type=int)
    p.add_argument("--full", action="store_true", help="also show each version's metadata")
    p.set_defaults(run=cmd_versions)
