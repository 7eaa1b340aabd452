"""The `reverie` command line: a thin layer over the client.

Every command takes --socket and --json. Errors are one line on stderr and a
non-zero exit code:

    1  the daemon reported an error (storage, internal, ...), or access was
       refused (access_denied: the socket's mode, or SO_PEERCRED)
    2  bad usage or invalid input (including a file that does not parse)
    3  the daemon is not running or cannot be reached
    4  no such memory
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from reverie import __version__
from reverie.errors import (
    ConfigError,
    NotFound,
    ReverieError,
    TransportError,
    UsageError,
)
from reverie.rpc import (
    cli_backup,  # backup, restore (issue 6)
    cli_config,  # config (issue 6)
    cli_doctor,  # doctor (issue 6)
    cli_dreams,
    cli_episodes,
    cli_events,
    cli_hook,
    cli_mcp,  # metrics and MCP bridge (issue 6)
    cli_metrics,  # metrics and MCP bridge (issue 6)
    cli_sessions,
    cli_versions,  # memory versions
)
from reverie.rpc._cli_base import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    common,
    emit,
    emit_json,
    fail,
    json_encoder,
    one_line,
    parse_meta,
    ts,
)
from reverie.rpc.client import Client
from reverie.rpc.protocol import DEFAULT_WORKSPACE, Explain, Memory, MemoryRecord

# -- commands -------------------------------------------------------------------


def cmd_daemon(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reverie.daemon.config_sources import Flags, LoadSpec
    from reverie.daemon.main import run

    # config (issue 6): the spec (file and flags) is what SIGHUP re-reads, so
    # the flags keep winning; `reverie config show` loads the same way.
    spec = LoadSpec(
        Path(args.config) if args.config else None,
        Flags(
            data_dir=args.data_dir or "", socket=args.socket or "", log_level=args.log_level or ""
        ),
    )
    loaded = spec.load_sourced()
    return run(loaded.config, json_logs=args.json, spec=spec, sourced=loaded)


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    st = client.status()
    if args.json:
        emit_json(st)
        return 0
    mem = st.memories
    print(f"reverie {st.version}  pid {st.pid}  up {st.uptime_s:.0f}s")
    print(f"socket     {st.socket}{'  (socket-activated)' if st.socket_activated else ''}")
    print(f"data dir   {st.data_dir}")
    print(f"database   {st.database}  {st.db_bytes / 1e6:.1f} MB  schema v{st.schema_version}")
    print(
        f"memories   {mem.get('active', 0)} active, {mem.get('superseded', 0)} superseded, "
        f"{mem.get('forgotten', 0)} forgotten in {st.workspaces} workspace(s)"
    )
    print(f"clients    {st.connections} connected")
    if (mx := st.metrics) is not None:  # metrics (issue 6): details in `reverie metrics`
        p99 = f", search p99 ~{mx.search_p99_ms:.1f} ms" if mx.search_p99_ms is not None else ""
        print(f"requests   {mx.requests} answered, {mx.errors} errors{p99}")
    if st.commits:
        print(
            f"writes     {st.writes} in {st.commits} commits "
            f"({st.writes / st.commits:.1f} per commit)"
        )
    ix = st.index
    if ix is None:
        print("index      disabled (lexical search only)")
    elif ix.phase == "rebuilding" and ix.total:
        print(f"index      rebuilding {ix.model}: {ix.done}/{ix.total}")
    else:
        extra = f", {ix.pending} changes pending" if ix.pending else ""
        if ix.workspace_indexes or ix.workspace_indexes_pending:
            extra += f", {ix.workspace_indexes} workspace indexes"
            if ix.workspace_indexes_pending:
                extra += f" ({ix.workspace_indexes_pending} to build)"
        note = f" ({ix.message})" if ix.message else ""
        print(f"index      {ix.phase}, {ix.vectors} vectors, {ix.model}{extra}{note}")
    return 0


def cmd_remember(args: argparse.Namespace, client: Client) -> int:
    fields: dict[str, Any] = {
        "workspace": args.workspace,
        "kind": args.kind,
        "tags": args.tag,
        "importance": args.importance,
        "metadata": parse_meta(args.meta),
    }
    text = sys.stdin.read() if args.text == "-" else args.text
    res = client.remember(text, **fields)
    if args.json:
        emit_json(res)
    else:
        print(res.id)
        if not res.created:
            sys.stderr.write(f"reverie: already remembered as #{res.id}\n")
    return 0


def _when(text: str) -> dt.datetime:
    """A date or time for --since/--until: ISO 8601, local time if no zone is given."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"not a date or time: {text!r} (use e.g. 2026-03-01 or 2026-03-01T14:00)"
        ) from None
    return value if value.tzinfo else value.astimezone()


def cmd_search(args: argparse.Namespace, client: Client) -> int:
    res = client.search(
        args.query,
        workspace=args.workspace,
        limit=args.limit,
        mode=args.mode,
        kinds=args.kind,
        tags=args.tag,
        explain=args.explain,
        since=_when(args.since) if args.since else None,
        until=_when(args.until) if args.until else None,
        include_archived=args.archived,
    )
    if args.json:
        emit_json(res)
        return 0
    for note in res.notes:
        sys.stderr.write(f"reverie: note: {note}\n")
    if not res.hits:
        print("no matches")
    for hit in res.hits:
        m = hit.memory
        print(f"#{m.id:<6} {hit.score:8.4f}  [{m.kind}] {one_line(m.content)}")
        if hit.explain is not None:
            print(f"         {_explain(hit.explain)}")
    return 0


def _explain(ex: Explain) -> str:
    parts = []
    if ex.lexical_rank is not None:
        parts.append(f"lexical #{ex.lexical_rank} ({ex.lexical_score:.3f})")
    if ex.vector_rank is not None:
        parts.append(f"vector #{ex.vector_rank} (cos {ex.vector_score:.3f})")
    parts.append(f"fused {ex.fused:.4f}")
    if ex.neighbour:
        parts.append(f"+neighbours {ex.neighbour:.4f}")
    if ex.boost != 1.0:
        parts.append(f"x boost {ex.boost:.2f}")
    return "  ".join(parts)


def cmd_get(args: argparse.Namespace, client: Client) -> int:
    m = client.get(args.id)
    if args.json:
        emit_json(m)
        return 0
    _print_memory(m)
    return 0


def _print_memory(m: Memory) -> None:
    print(f"#{m.id}  {m.kind}  {m.state}/{m.tier}  workspace {m.workspace}")
    print(f"  created {ts(m.created_at)}  observed {ts(m.observed_at)}  updated {ts(m.updated_at)}")
    print(
        f"  importance {m.importance:.2f}  recalled {m.recall_count}x "
        f"({m.distinct_queries} distinct queries)  last {ts(m.last_recalled_at)}"
    )
    if m.tags:
        print(f"  tags {' '.join(m.tags)}")
    if m.superseded_by:
        print(f"  superseded by #{m.superseded_by}")
    if m.metadata:
        print(f"  metadata {json.dumps(m.metadata, ensure_ascii=False)}")
    print()
    print(m.content)


def cmd_forget(args: argparse.Namespace, client: Client) -> int:
    res = client.forget(args.id, purge=args.purge, reason=args.reason)
    return emit(args, res, f"forgot #{res.id}" + (" (content erased)" if res.purged else ""))


def cmd_export(args: argparse.Namespace, client: Client) -> int:
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    count = 0
    try:
        for rec in client.export(
            workspace=args.workspace, include_forgotten=args.include_forgotten
        ):
            out.write(json_encoder.encode(rec).decode() + "\n")
            count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    if args.json and args.output:
        emit_json({"exported": count, "file": args.output})
    elif args.output:
        print(f"exported {count} memories to {args.output}")
    return 0


def _read_records(path: str) -> list[MemoryRecord]:
    """Parse and validate the whole file first, so that a bad line imports nothing.

    Errors name the line: invalid UTF-8, a line that is not a record, or a uid
    that an earlier line already used (the store would keep only the first).
    """
    decoder = msgspec.json.Decoder(MemoryRecord)
    try:
        stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    records: list[MemoryRecord] = []
    first_line: dict[str, int] = {}
    with stream:
        for lineno, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UsageError(f"{path}:{lineno}: not UTF-8 text: {e}") from e
            if not line.strip():
                continue
            try:
                rec = decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                raise UsageError(f"{path}:{lineno}: not a memory record: {e}") from e
            if rec.uid in first_line:
                raise UsageError(
                    f"{path}:{lineno}: uid {rec.uid!r} already used on line {first_line[rec.uid]}"
                )
            first_line[rec.uid] = lineno
            records.append(rec)
    return records


def cmd_import(args: argparse.Namespace, client: Client) -> int:
    records = _read_records(args.file)
    res = client.import_records(records)
    return emit(args, res, f"imported {res.added} memories, skipped {res.skipped} already present")


# -- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reverie", description="reverie: a memory daemon for AI agents."
    )
    parser.add_argument("--version", action="version", version=f"reverie {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("daemon", help="run the daemon in the foreground")
    common(p)
    p.add_argument("--config", help="config file (default: $REVERIE_CONFIG or XDG config)")
    p.add_argument("--data-dir", help="data directory (default: $REVERIE_DATA_DIR or XDG state)")
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="wins over $REVERIE_LOG_LEVEL and [daemon] log_level (default info)",
    )
    p.set_defaults(run=cmd_daemon, needs_client=False)

    p = sub.add_parser("status", help="show the daemon's state: uptime, counts, sizes")
    common(p)
    p.set_defaults(run=cmd_status)

    p = sub.add_parser("remember", help="store a memory and print its id")
    common(p)
    p.add_argument("text", help="the memory's text ('-' reads stdin)")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    p.add_argument(
        "--kind",
        default="observation",
        help="observation, fact, preference, decision, procedure, ...",
    )
    p.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    p.add_argument("--importance", type=float, default=0.5, help="0 to 1 (default 0.5)")
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata (repeatable; JSON values keep their type)",
    )
    p.set_defaults(run=cmd_remember)

    p = sub.add_parser("search", help="search memories (hybrid: full text and vectors)")
    common(p)
    p.add_argument("query")
    p.add_argument("--workspace", help="only this workspace (default: all)")
    p.add_argument("--limit", type=int, default=10, help="at most this many results (1-1000)")
    p.add_argument(
        "--mode",
        choices=["hybrid", "lexical", "vector"],
        help="default: the daemon's [search] mode (hybrid)",
    )
    p.add_argument("--kind", action="append", default=[], help="only this kind (repeatable)")
    p.add_argument("--tag", action="append", default=[], help="must carry this tag (repeatable)")
    p.add_argument("--since", help="observed at or after (ISO date or time)")
    p.add_argument("--until", help="observed before (ISO date or time)")
    p.add_argument("--archived", action="store_true", help="include the archived tier")
    p.add_argument("--explain", action="store_true", help="show each component's rank and score")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("get", help="show one memory")
    common(p)
    p.add_argument("id", type=int)
    p.set_defaults(run=cmd_get)

    p = sub.add_parser("forget", help="forget a memory (kept as a tombstone)")
    common(p)
    p.add_argument("id", type=int)
    p.add_argument("--purge", action="store_true", help="also erase its text now")
    p.add_argument("--reason", default="", help="why (kept in the tombstone)")
    p.set_defaults(run=cmd_forget)

    p = sub.add_parser("export", help="write memories as JSON Lines")
    common(p)
    p.add_argument("--workspace", help="only this workspace (default: all)")
    p.add_argument("--output", "-o", help="file to write (default: stdout)")
    p.add_argument("--include-forgotten", action="store_true", help="include tombstones")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("import", help="read memories from JSON Lines (idempotent)")
    common(p)
    p.add_argument("file", help="a file written by `reverie export` ('-' reads stdin)")
    p.set_defaults(run=cmd_import)

    # Each feature's commands (rpc/cli_<feature>.py), in the order of `--help`.
    cli_events.add_commands(sub)
    cli_episodes.add_commands(sub)
    cli_sessions.add_commands(sub)
    cli_hook.add_commands(sub)
    cli_dreams.add_commands(sub)
    cli_config.add_commands(sub)  # config (issue 6): config show, config check
    cli_versions.add_commands(sub)  # memory versions: update, versions
    cli_metrics.add_commands(sub)  # metrics (issue 6)
    cli_mcp.add_commands(sub)  # MCP bridge (issue 6)
    cli_doctor.add_commands(sub)  # doctor (issue 6)
    cli_backup.add_commands(sub)  # backup, restore (issue 6)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # -- hooks (rpc/hook.py): no parser, which would exit 2 on a bad argument.
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["hook"] and not {"-h", "--help"} & set(words[1:]):
        from reverie.rpc.hook import main as hook_main

        return hook_main(words[1:])
    args = build_parser().parse_args(argv)
    try:
        if not getattr(args, "needs_client", True):
            return int(args.run(args))
        run: Callable[[argparse.Namespace, Client], int] = args.run
        with Client(args.socket, name=f"reverie-cli/{__version__}") as client:
            return run(args, client)
    except NotFound as e:
        fail(e.message, EXIT_NOT_FOUND)
    except (UsageError, ConfigError) as e:
        fail(e.message, EXIT_USAGE)
    except TransportError as e:
        fail(e.message, EXIT_UNREACHABLE)
    except ReverieError as e:
        fail(f"{e.message} [{e.code}]", EXIT_ERROR)
    except BrokenPipeError:
        return 0  # e.g. `reverie export | head`
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
