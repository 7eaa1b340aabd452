"""`reverie events`, `reverie post-events` and `reverie capture`: the event log's commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec
from reverie.errors import UsageError
from reverie.rpc._cli_base import common, emit_json, one_line, ts
from reverie.rpc.client import Client
from reverie.rpc.proto_events import (
    Capture,
    CaptureResult,
    Event,
    ListEvents,
    ListEventsResult,
    PostEvents,
    PostEventsResult,
    StoredEvent,
)

# A post is split so that each request stays well under the frame limit.
_BATCH_EVENTS = 500
_BATCH_BYTES = 4 * 1024 * 1024


def resolve_workspace(value: str | None) -> str:
    """A workspace id: given as an id, as a path (of a directory in it), or the current one."""
    from reverie.rpc.workspace import workspace_for

    if value is None:
        return workspace_for().id
    if value.startswith(("git:", "path:")) or not os.path.exists(value):
        return value
    return workspace_for(value).id


# -- reverie events ---------------------------------------------------------------------


def cmd_events(args: argparse.Namespace, client: Client) -> int:
    req = ListEvents(
        workspace=args.workspace,
        session_id=args.session,
        type=args.type,
        harness=args.harness,
        limit=args.limit,
        before_id=args.before,
    )
    res: ListEventsResult = client.call(req)
    if args.json:
        emit_json(res)
        return 0
    if not res.events:
        print("no events")
    for e in reversed(res.events):  # oldest first, like a log
        print(_event_line(e))
    if res.next_before_id is not None:
        sys.stderr.write(f"reverie: more with --before {res.next_before_id}\n")
    return 0


def _event_line(e: StoredEvent) -> str:
    session = (e.session_id or "-")[:8]
    body = one_line(json.dumps(e.payload, ensure_ascii=False), 100) if e.payload else ""
    return f"#{e.id:<7} {ts(e.at)}  {e.harness:<11} {session:<8} {e.type:<18} {body}"


# -- reverie post-events -------------------------------------------------------------------


def read_events(path: str) -> list[Event]:
    """Parse and validate the whole file first, so that a bad line posts nothing."""
    decoder = msgspec.json.Decoder(Event)
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    out: list[Event] = []
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            out.append(decoder.decode(line))
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as e:
            raise UsageError(f"{path}:{lineno}: not an event: {e}") from e
    return out


def post_all(client: Client, events: list[Event]) -> PostEventsResult:
    """Post in batches under the frame limit; the sum of the results."""
    total = PostEventsResult(stored=0, duplicates=0, observations=0, dropped=0)
    batch: list[Event] = []
    size = 0
    encoder = msgspec.msgpack.Encoder()
    for event in events:
        n = len(encoder.encode(event))
        if batch and (len(batch) >= _BATCH_EVENTS or size + n > _BATCH_BYTES):
            _add(total, client.call(PostEvents(events=batch)))
            batch, size = [], 0
        batch.append(event)
        size += n
    if batch:
        _add(total, client.call(PostEvents(events=batch)))
    return total


def _add(total: PostEventsResult, part: PostEventsResult) -> None:
    total.stored += part.stored
    total.duplicates += part.duplicates
    total.observations += part.observations
    total.dropped += part.dropped


def cmd_post_events(args: argparse.Namespace, client: Client) -> int:
    res = post_all(client, read_events(args.file))
    if args.json:
        emit_json(res)
    else:
        print(
            f"stored {res.stored} events ({res.observations} new observations), "
            f"{res.duplicates} already stored, {res.dropped} dropped (capture off)"
        )
    return 0


# -- reverie capture --------------------------------------------------------------------------


def cmd_capture(args: argparse.Namespace, client: Client) -> int:
    if args.all and args.action != "status":
        raise UsageError("--all goes with `capture status` only")
    workspace = None if args.all else resolve_workspace(args.workspace)
    enabled: Any = {"on": True, "off": False, "status": None}[args.action]
    res: CaptureResult = client.call(Capture(workspace=workspace, enabled=enabled))
    if args.json:
        emit_json(res)
        return 0
    if not res.workspaces:
        print("capture is on everywhere (no workspace has a setting)")
    for s in res.workspaces:
        since = f"  (since {ts(s.updated_at)})" if s.updated_at else ""
        print(f"capture {'on ' if s.enabled else 'off'}  {s.workspace}{since}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("events", help="show the event log that hooks posted (newest last)")
    common(p)
    p.add_argument("--workspace", help="only this workspace id")
    p.add_argument("--session", help="only this session id")
    p.add_argument("--type", help="only this event type, e.g. UserPromptSubmit")
    p.add_argument("--harness", help="only this harness, e.g. claude-code")
    p.add_argument("--limit", type=int, default=50, help="the most recent N (1-1000, default 50)")
    p.add_argument("--before", type=int, metavar="ID", help="older than this event id (paging)")
    p.set_defaults(run=cmd_events)

    p = sub.add_parser(
        "post-events", help="post events from JSON Lines (idempotent by key; spool format)"
    )
    common(p)
    p.add_argument("file", help="one event object per line ('-' reads stdin)")
    p.set_defaults(run=cmd_post_events)

    p = sub.add_parser("capture", help="turn event capture off or on for a workspace")
    common(p)
    p.add_argument("action", choices=["on", "off", "status"])
    p.add_argument(
        "--workspace",
        metavar="PATH_OR_ID",
        help="a directory in the workspace, or its id (default: the current directory's)",
    )
    p.add_argument("--all", action="store_true", help="status: every workspace with a setting")
    p.set_defaults(run=cmd_capture)
