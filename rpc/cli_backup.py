"""`reverie backup FILE` (daemon running) and `reverie restore FILE` (daemon stopped)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from reverie import __version__
from reverie.rpc._cli_base import common, emit_json
from reverie.rpc.client import Client
from reverie.rpc.proto_backup import Backup, BackupProgress, BackupProgressResult, BackupResult

POLL_S = 0.5


def cmd_backup(args: argparse.Namespace) -> int:
    target = Path(args.file).expanduser().absolute()  # the daemon has another cwd
    req = Backup(
        path=str(target), force=args.force, verify=not args.no_verify, index=not args.no_index
    )
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            with Client(args.socket, timeout=None, name=f"reverie-cli/{__version__}") as c:
                outcome["result"] = c.call(req)
        except BaseException as e:  # re-raised in the main thread
            outcome["error"] = e

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    shown = False
    worker.join(POLL_S)
    if worker.is_alive() and not args.quiet:
        # Progress on a second connection, so that the backup call stays simple.
        with Client(args.socket, name=f"reverie-cli/{__version__}") as poll:
            while worker.is_alive():
                p: BackupProgressResult = poll.call(BackupProgress())
                if p.running and p.total:
                    sys.stderr.write(
                        f"\rbackup: {p.done}/{p.total} pages ({100 * p.done // p.total}%)"
                    )
                    sys.stderr.flush()
                    shown = True
                worker.join(POLL_S)
    worker.join()
    if shown:
        sys.stderr.write("\n")
    if "error" in outcome:
        raise outcome["error"]
    r: BackupResult = outcome["result"]
    if args.json:
        emit_json(r)
    else:
        print(
            f"backed up {r.memories} memories (schema v{r.schema_version}, seq {r.seq}) to "
            f"{r.path}: {r.bytes / 1e6:.1f} MB, {r.pages} pages in {r.duration_ms} ms"
            f"{', verified' if r.verified else ''}"
        )
        if r.index_included:
            print(f"with the vector index saved at seq {r.index_seq} in {r.path}.index/")
        else:
            print("without the vector index: after a restore the daemon rebuilds it")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from reverie.daemon import config
    from reverie.store.backup import restore_blocking

    data_dir = Path(args.data_dir).expanduser() if args.data_dir else config.load().data_path
    r = restore_blocking(Path(args.file).expanduser().absolute(), data_dir, force=args.force)
    if args.json:
        emit_json(r)
    else:
        print(f"restored {r.memories} memories (schema v{r.schema_version}) into {r.path}")
        if r.previous:
            print(f"the previous database is kept as {r.previous}")
        how = "catches up the restored" if r.index_restored else "rebuilds the"
        print(f"start the daemon: it {how} vector index")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backup",
        help="snapshot the database while the daemon runs (SQLite backup API)",
        description="The daemon copies a consistent snapshot of its database into FILE "
        "(written as FILE.tmp, checked, fsynced, renamed; mode 0600). Writes go on meanwhile; "
        "every write acknowledged before the backup started is in it. The saved vector index "
        "is copied to FILE.index/ when it is not newer than the snapshot (else restore has "
        "the daemon rebuild it). FILE must be writable by the daemon.",
    )
    common(p)
    p.add_argument("file", help="where to write the backup")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--no-verify", action="store_true", help="skip PRAGMA quick_check on the copy")
    p.add_argument(
        "--no-index", action="store_true", help="do not copy the saved vector index to FILE.index/"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.set_defaults(run=cmd_backup, needs_client=False)

    p = sub.add_parser(
        "restore",
        help="install a backup as the database (the daemon must be stopped)",
        description="Verifies FILE (a reverie database of a supported schema that passes "
        "integrity_check), keeps the current database as reverie.db.before-restore-<time>, "
        "installs FILE and FILE.index/ if it fits (else removes the vector index, which the "
        "daemon then rebuilds). "
        "Refuses while a daemon holds the data dir.",
    )
    common(p)
    p.add_argument("file", help="a file written by `reverie backup`")
    p.add_argument("--data-dir", help="data dir to restore into (default: the config's)")
    p.add_argument(
        "--force", action="store_true", help="replace an existing database (it is kept aside)"
    )
    p.set_defaults(run=cmd_restore, needs_client=False)
