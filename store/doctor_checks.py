"""The checks `reverie doctor` runs on the data dir and the database.

Each check returns a DoctorCheck: ok, warn (works, but look at it) or fail
(broken or unsafe), a one-line summary and a hint. The same functions serve
the daemon (the `doctor` RPC, on one of its reader connections, with its live
index) and the CLI when the daemon is down (on a read-only connection of its
own, with the saved index's header): a doctor never changes anything.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import apsw
import msgspec
from reverie.daemon.config import EmbedderConfig
from reverie.errors import ReverieError
from reverie.phases.names import PHASES
from reverie.rpc.proto_doctor import CheckStatus, DoctorCheck, DoctorResult
from reverie.store import schema
from reverie.store.connection import APPLICATION_ID, BUSY_TIMEOUT_MS
from reverie.store.database import Database
from reverie.store.index_file import CorruptIndex, read_header
from reverie.store.indexer import INDEX_DIR, Indexer
from reverie.store.vector_index import DEFAULT_NAME

FREE_WARN_BYTES = 1 << 30  # warn under 1 GiB free...
FREE_WARN_RATIO = 0.05  # ...or under 5% of the file system
FREE_FAIL_BYTES = 64 << 20  # a write burst or a checkpoint can fail under this
PENDING_WARN = 10_000  # index changes waiting: beyond this the index is far behind
RUN_AGE_WARN_S = 7 * 86400  # a phase that has not completed for a week
RUN_LONG_S = 6 * 3600  # a run still going after this long is probably stuck

_STATUS_RANK: dict[CheckStatus, int] = {"ok": 0, "warn": 1, "fail": 2}


def worst(statuses: list[CheckStatus]) -> CheckStatus:
    return max(statuses, key=_STATUS_RANK.__getitem__, default="ok")


def _check(name: str, status: CheckStatus, summary: str, hint: str = "") -> DoctorCheck:
    return DoctorCheck(name=name, status=status, summary=summary, hint=hint)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


# -- the data dir ---------------------------------------------------------------------


def data_dir_permissions(path: Path) -> DoctorCheck:
    name = "data_dir_permissions"
    try:
        st = path.stat()
    except FileNotFoundError:
        return _check(
            name,
            "fail",
            f"data dir {path} does not exist",
            "start the daemon once, or check data_dir",
        )
    except OSError as e:
        return _check(
            name, "fail", f"cannot stat data dir {path}: {e.strerror}", "check its parent"
        )
    mode = stat.S_IMODE(st.st_mode)
    chmod = f"chmod 700 {path}"
    if not stat.S_ISDIR(st.st_mode):
        return _check(name, "fail", f"{path} is not a directory", "point data_dir at a directory")
    if mode & 0o002:
        return _check(
            name, "fail", f"data dir {path} is writable by everyone (mode {mode:04o})", chmod
        )
    if not os.access(path, os.W_OK | os.X_OK):
        return _check(
            name,
            "fail",
            f"data dir {path} is not writable by uid {os.geteuid()} (mode {mode:04o})",
            f"run as its owner (uid {st.st_uid}) or fix its permissions",
        )
    # The database file's own mode matters little behind a 0700 directory
    # (SQLite creates it with the umask's mode): only the directory is checked.
    if mode & 0o077:
        return _check(
            name,
            "warn",
            f"data dir {path} is open to group or others (mode {mode:04o}); "
            "memories may hold private text",
            chmod,
        )
    if st.st_uid != os.geteuid():
        return _check(
            name,
            "warn",
            f"data dir {path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})",
            "run reverie doctor as the daemon's user",
        )
    return _check(name, "ok", f"data dir {path} mode {mode:04o}, owned by uid {st.st_uid}")


def free_space(path: Path) -> DoctorCheck:
    name = "free_space"
    try:
        vfs = os.statvfs(path)
    except OSError as e:
        return _check(name, "fail", f"cannot stat the file system of {path}: {e.strerror}")
    free = vfs.f_bavail * vfs.f_frsize
    total = vfs.f_blocks * vfs.f_frsize or 1
    text = f"{free / 2**30:.1f} GiB free ({100 * free / total:.0f}% of {total / 2**30:.1f} GiB)"
    hint = "free some space: a full disk refuses writes (and backups)"
    if free < FREE_FAIL_BYTES:
        return _check(name, "fail", text, hint)
    if free < FREE_WARN_BYTES or free / total < FREE_WARN_RATIO:
        return _check(name, "warn", text, hint)
    return _check(name, "ok", text)


# -- the database -------------------------------------------------------------------


def open_readonly(path: Path) -> apsw.Connection:
    """A read-only connection with none of the settings that write (no WAL switch)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    return conn


def schema_check(conn: apsw.Connection) -> DoctorCheck:
    app_id = int(conn.pragma("application_id"))
    version = schema.schema_version(conn)
    if app_id != APPLICATION_ID:
        return _check(
            "schema",
            "fail",
            f"not a reverie database (application_id {app_id:#x})",
            "point data_dir elsewhere or restore a backup",
        )
    if version > schema.LATEST:
        return _check(
            "schema",
            "fail",
            f"schema v{version} is newer than this reverie supports (v{schema.LATEST})",
            "upgrade reverie",
        )
    if version < schema.LATEST:
        return _check(
            "schema",
            "warn",
            f"schema v{version}; this reverie uses v{schema.LATEST}",
            "the daemon migrates it at its next start (take a backup first)",
        )
    return _check("schema", "ok", f"schema v{version} (current)")


def quick_check(conn: apsw.Connection) -> DoctorCheck:
    answer = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
    if answer == ["ok"]:
        return _check("quick_check", "ok", "PRAGMA quick_check: ok")
    return _check(
        "quick_check",
        "fail",
        f"PRAGMA quick_check: {'; '.join(answer[:3])}" + (" ..." if len(answer) > 3 else ""),
        "stop the daemon and `reverie restore` a backup (or .recover with the sqlite3 shell)",
    )


def phase_locks(conn: apsw.Connection, now: float, *, daemon_running: bool) -> DoctorCheck:
    held: list[str] = []
    stale: list[str] = []
    orphaned: list[str] = []
    for lock, owner, expires in conn.execute("SELECT name, owner, expires_at FROM locks"):
        if expires <= 0:
            continue  # released
        if expires <= now:
            stale.append(f"{lock} (held by {owner}, expired {_ago(now - expires)})")
        elif daemon_running:
            held.append(f"{lock} (by {owner}, {expires - now:.0f}s left)")
        else:
            orphaned.append(f"{lock} (by {owner}, {expires - now:.0f}s left)")
    if stale or orphaned:
        return _check(
            "phase_locks",
            "warn",
            "stale: " + ", ".join(stale + orphaned),
            "its holder died or overran its TTL: the next run takes the lock over once it "
            "expires; check the daemon's log for the failed run",
        )
    if held:
        return _check("phase_locks", "ok", "held: " + ", ".join(held))
    return _check("phase_locks", "ok", "no phase lock held")


def last_runs(conn: apsw.Connection, now: float, *, daemon_running: bool) -> list[DoctorCheck]:
    out: list[DoctorCheck] = []
    for phase in PHASES:
        name = f"last_run:{phase}"
        row = conn.execute(
            "SELECT status, started_at, duration_ms, errors FROM dream_runs WHERE phase = ? "
            "ORDER BY started_at DESC, id DESC LIMIT 1",
            (phase,),
        ).fetchall()
        if not row:
            out.append(_check(name, "ok", f"{phase}: never run"))
            continue
        last: tuple[Any, ...] = row[0]
        status, errors = str(last[0]), str(last[3])
        started, duration_ms = float(last[1]), int(last[2] or 0)
        when = _ago(max(0.0, now - started))
        hint = f"see `reverie dreams status`; run it by hand with `reverie dreams run {phase}`"
        if status == "failed":
            first = _first_error(errors)
            out.append(_check(name, "warn", f"{phase}: failed, started {when}{first}", hint))
        elif status == "running" and not daemon_running:
            out.append(_check(name, "warn", f"{phase}: interrupted (started {when})", hint))
        elif status == "running" and now - started > RUN_LONG_S:
            out.append(_check(name, "warn", f"{phase}: running since {when}", hint))
        elif status == "running":
            out.append(_check(name, "ok", f"{phase}: running, started {when}"))
        elif now - started > RUN_AGE_WARN_S:
            summary = f"{phase}: last run {when} ({status})"
            out.append(_check(name, "warn", summary, "check the [dreams] schedule; " + hint))
        else:
            out.append(_check(name, "ok", f"{phase}: {status} {when} in {duration_ms} ms"))
    return out


def _first_error(raw: str) -> str:
    try:
        errors = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return ""
    if isinstance(errors, list) and errors:
        return f": {' '.join(str(errors[0]).split())[:120]}"
    return ""


def indexable(conn: apsw.Connection) -> tuple[int, int]:
    """(memories the vector index should hold, the store's change sequence)."""
    n = conn.execute(
        "SELECT count(*) FROM memories WHERE state = 'active' AND tier != 'archived'"
    ).get
    seq = conn.execute("SELECT coalesce(max(seq), 0) FROM memories").get
    return int(n or 0), int(seq or 0)


def database_checks(
    conn: apsw.Connection, now: float, *, daemon_running: bool
) -> list[DoctorCheck]:
    first = schema_check(conn)
    if first.status == "fail":
        return [first]
    return [
        first,
        quick_check(conn),
        phase_locks(conn, now, daemon_running=daemon_running),
        *last_runs(conn, now, daemon_running=daemon_running),
    ]


# -- the vector index and the embedder --------------------------------------------------


def index_live(ix: Indexer | None, expected: int, max_seq: int) -> DoctorCheck:
    if ix is None:
        return _check("index", "ok", "vector index off ([index] enabled = false)")
    p = ix.progress
    if p.phase == "failed":
        return _check("index", "fail", f"index failed: {p.message}", "see the daemon's log")
    if p.phase != "ready" or not ix.ready:
        done = f" ({p.done}/{p.total})" if p.total else ""
        return _check(
            "index",
            "warn",
            f"index {p.phase}{done}: searches are lexical meanwhile",
            "wait for it to finish",
        )
    lag = max(0, max_seq - ix.indexed_seq)
    text = f"{ix.vectors} vectors, {expected} indexable memories, {lag} changes pending"
    if lag > PENDING_WARN:
        return _check("index", "warn", text, "the indexer is far behind: is the embedder slow?")
    if lag == 0 and ix.vectors != expected:
        return _check(
            "index",
            "warn",
            text + " (counts differ)",
            "restart the daemon after removing <data_dir>/index to rebuild it",
        )
    return _check("index", "ok", text)


def index_saved(data_dir: Path, expected: int, max_seq: int) -> DoctorCheck:
    try:
        header = read_header(data_dir / INDEX_DIR, DEFAULT_NAME)
    except CorruptIndex as e:
        if e.reason == "missing":
            return _check(
                "index", "ok", "no saved index: the daemon builds it from SQLite at start"
            )
        return _check(
            "index",
            "warn",
            f"saved index unusable ({e.reason}): the daemon rebuilds it at start",
            "nothing to do, unless this repeats",
        )
    text = f"saved index: {header.count} vectors at seq {header.seq}; SQLite at seq {max_seq}"
    if header.seq > max_seq:
        return _check(
            "index",
            "warn",
            text + " (index ahead of the database: rebuilt at start)",
            "was the database restored or replaced? nothing to do",
        )
    if header.seq == max_seq and header.count != expected:
        return _check(
            "index",
            "warn",
            text + f", but {expected} indexable memories",
            "remove <data_dir>/index to have it rebuilt",
        )
    return _check("index", "ok", text + (" (caught up at start)" if header.seq < max_seq else ""))


def embedder_live(ix: Indexer | None) -> DoctorCheck:
    if ix is None:
        return _check("embedder", "ok", "no embedder: the vector index is off")
    p = ix.progress
    if p.phase == "failed":
        return _check("embedder", "fail", f"{p.model}: {p.message}", "check the [embedder] config")
    return _check("embedder", "ok", f"{ix.model or p.model} ({p.phase})")


def embedder_configured(cfg: EmbedderConfig) -> DoctorCheck:
    from reverie.store.embedding import make_embedder

    try:
        embedder = make_embedder(cfg)
    except ReverieError as e:
        return _check("embedder", "fail", f"{cfg.name}: {e.message}", "fix the [embedder] config")
    return _check("embedder", "ok", f"{embedder.model_id} can be built (not loaded)")


# -- the daemon's answer to `doctor` ----------------------------------------------------


async def serve(db: Database, data_dir: Path, indexer: Indexer | None) -> DoctorResult:
    now = time.time()

    def read(conn: apsw.Connection) -> tuple[list[DoctorCheck], int, int]:
        checks = database_checks(conn, now, daemon_running=True)
        expected, seq = indexable(conn)
        return checks, expected, seq

    checks, expected, seq = await db.read(read)
    return DoctorResult(
        checks=[
            data_dir_permissions(data_dir),
            free_space(data_dir),
            *checks,
            index_live(indexer, expected, seq),
            embedder_live(indexer),
        ]
    )
