"""`reverie doctor`, client side: what to check, from where.

If the daemon answers, it reports its own view (the `doctor` RPC: data dir,
schema, quick_check, live index, embedder, phases; store/doctor_checks.py)
and this side adds what only a client sees: can it connect, the socket's
permissions, the hooks' spool. If it does not, the same database checks run
here on a read-only connection (SQLITE_OPEN_READONLY, nothing written, no
WAL switch), with the saved index's header instead of the live index.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path

from reverie import __version__
from reverie.daemon import config as config_mod
from reverie.daemon.datadir import LOCK_NAME
from reverie.errors import AccessDenied, ConfigError, ReverieError, TransportError
from reverie.rpc import spool
from reverie.rpc.client import Client, resolve_socket
from reverie.rpc.proto_doctor import Doctor, DoctorCheck, DoctorResult

DOCTOR_TIMEOUT_S = 120.0  # quick_check of a large database takes a while


def _check(name: str, status: str, summary: str, hint: str = "") -> DoctorCheck:
    return DoctorCheck(name=name, status=status, summary=summary, hint=hint)  # type: ignore[arg-type]


def lock_holder(data_dir: Path) -> str | None:
    """The pid in the data dir's lock if a process holds it, else None (never creates it).

    Probes with a shared, non-blocking flock released at once: a daemon
    starting in that instant could fail to lock, which is why restore takes
    the lock for real instead of probing.
    """
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def socket_permissions(path: Path, group: str) -> DoctorCheck:
    name = "socket_permissions"
    try:
        st = path.lstat()
    except FileNotFoundError:
        return _check(name, "warn", f"no socket at {path}", "the daemon creates it when it starts")
    except OSError as e:
        return _check(name, "fail", f"cannot stat {path}: {e.strerror}", "check the directory")
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISSOCK(st.st_mode):
        return _check(name, "fail", f"{path} is not a socket", "remove it; the daemon recreates it")
    text = f"{path} mode {mode:04o}, owner uid {st.st_uid}"
    if mode & 0o007:
        return _check(
            name,
            "warn",
            text + ": other users may connect (the daemon still checks their uid)",
            'set [daemon] socket_mode = "0600"',
        )
    if mode & 0o070 and not group:
        return _check(
            name, "warn", text + ": group access without a socket_group", "set socket_mode = 0600"
        )
    if st.st_uid != os.geteuid() and os.geteuid() != 0 and not mode & 0o070:
        return _check(
            name,
            "warn",
            text + f": not this user's (uid {os.geteuid()})",
            "run as the daemon's user or configure socket_group",
        )
    return _check(name, "ok", text)


def spool_backlog(directory: Path, *, daemon_running: bool) -> DoctorCheck:
    name = "spool_backlog"
    now = time.time()
    files = spool.pending(directory, now=now)
    bad_dir = directory / spool.BAD_DIR
    bad = len(list(bad_dir.iterdir())) if bad_dir.is_dir() else 0
    if not files and not bad:
        return _check(name, "ok", f"spool {directory}: empty")
    events = 0
    oldest = now
    for f in files:
        try:
            events += f.read_bytes().count(b"\n")
            oldest = min(oldest, f.stat().st_mtime)
        except OSError:
            continue
    parts = []
    if files:
        parts.append(f"{len(files)} file(s), {events} event(s) waiting, oldest {now - oldest:.0f}s")
    if bad:
        parts.append(f"{bad} unreadable file(s) in {bad_dir}")
    hint = (
        "the daemon drains the spool on a timer: if this persists, see its log"
        if daemon_running
        else "start the daemon: it drains the spool at start"
    )
    if bad:
        hint += f"; inspect and remove the files in {bad_dir}"
    return _check(name, "warn", f"spool {directory}: " + "; ".join(parts), hint)


def _local_checks(cfg: config_mod.Config, data_dir: Path) -> list[DoctorCheck]:
    # APSW and the store are imported only here: the daemon-up path stays light.
    from reverie.store import doctor_checks as dc
    from reverie.store.database import DB_FILENAME

    checks = [dc.data_dir_permissions(data_dir), dc.free_space(data_dir)]
    db_path = data_dir / DB_FILENAME
    if not db_path.exists():
        checks.append(
            _check("schema", "warn", f"no database at {db_path}", "the daemon creates it at start")
        )
    else:
        try:
            conn = dc.open_readonly(db_path)
            try:
                checks += dc.database_checks(conn, time.time(), daemon_running=False)
                if checks[-1].status != "fail" or checks[-1].name != "schema":
                    expected, seq = dc.indexable(conn)
                    checks.append(dc.index_saved(data_dir, expected, seq))
            finally:
                conn.close()
        except Exception as e:  # apsw errors: report, keep checking the rest
            checks.append(
                _check("database", "fail", f"cannot read {db_path}: {e}", "check its permissions")
            )
    checks.append(dc.embedder_configured(cfg.embedder))
    return checks


def run(socket: str | None = None, data_dir: str | None = None) -> list[DoctorCheck]:
    """Every check, in display order; never raises for what it finds."""
    checks: list[DoctorCheck] = []
    try:
        cfg = config_mod.load()
    except ConfigError as e:
        checks.append(_check("config", "fail", e.message, "fix the config file"))
        cfg = config_mod.Config()
    if data_dir:
        cfg.daemon.data_dir = data_dir
    sock = resolve_socket(socket)
    remote: DoctorResult | None = None
    try:
        with Client(sock, timeout=DOCTOR_TIMEOUT_S, name=f"reverie-doctor/{__version__}") as c:
            st = c.status()
            remote = c.call(Doctor())
        checks.append(
            _check(
                "daemon",
                "ok",
                f"reverie {st.version} pid {st.pid} up {st.uptime_s:.0f}s on {sock}",
            )
        )
        if not data_dir:
            cfg.daemon.data_dir = st.data_dir
    except (TransportError, AccessDenied) as e:
        holder = lock_holder(cfg.data_path)
        also = f"; but pid {holder} holds {cfg.data_path}'s lock: wrong --socket?" if holder else ""
        hint = (
            "check --socket / REVERIE_SOCKET"
            if holder
            else "start it: `reverie daemon` or `systemctl [--user] start reverie`"
        )
        checks.append(_check("daemon", "fail", f"not reachable: {e.message}{also}", hint))
    except ReverieError as e:
        checks.append(
            _check("daemon", "fail", f"answered with an error: {e.message}", "see its log")
        )
    checks.append(socket_permissions(sock, cfg.daemon.socket_group))
    if remote is not None:
        checks += remote.checks
    else:
        checks += _local_checks(cfg, cfg.data_path)
    checks.append(spool_backlog(spool.dir_for(cfg), daemon_running=remote is not None))
    return checks
