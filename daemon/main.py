"""The daemon process: wire the store, the server and systemd together.

Start-up order matters for systemd: the data dir is locked and the database
migrated before the socket accepts, and READY=1 is sent only once it does.
Shutdown runs the other way: STOPPING=1, stop accepting, finish in-flight
requests within the grace period, close the database, release the lock.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import trio
from reverie import __version__
from reverie.daemon import datadir, logs
from reverie.daemon.config import Config
from reverie.daemon.config_sources import (  # config (issue 6): sources, reload
    LoadSpec,
    RunningConfig,
    Sourced,
    changed_keys,
    copy_into,
    reloadable,
)
from reverie.daemon.listen import access, bind_unix_socket
from reverie.daemon.metrics import METRICS  # dreams pace while clients are served
from reverie.daemon.search_workers import SearchWorkers  # load (issue 7)
from reverie.daemon.server import Server
from reverie.daemon.spool_drain import SpoolDrainer
from reverie.daemon.systemd import Notifier, activated_socket, watchdog_interval, watchdog_loop
from reverie.errors import ReverieError
from reverie.phases.service import Dreams
from reverie.rpc import spool
from reverie.rpc.dispatch import Dispatcher, ServerInfo
from reverie.rpc.proto_config import ReloadInfo  # config (issue 6)
from reverie.store.database import Database
from reverie.store.embedding import make_embedder
from reverie.store.indexer import Indexer, Progress

log = logging.getLogger("reverie.daemon")
STATUS_INTERVAL_S = 5.0
# Exit codes: 0 clean stop, 1 runtime failure, 78 (EX_CONFIG) when start-up is
# refused for a reason a restart cannot fix (bad config, locked or foreign data).
EXIT_FAILURE = 1
EXIT_CONFIG = 78


def run(
    cfg: Config,
    *,
    json_logs: bool = False,
    spec: LoadSpec | None = None,
    sourced: Sourced | None = None,
) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; return the exit code.

    `spec` is how `cfg` was found (--config, flags): SIGHUP reloads through it,
    so the flags keep winning over the file. `sourced` is what `spec` loaded:
    the file read and where each key came from (for `config_show`).
    """
    logs.setup(cfg.daemon.log_level, json_lines=json_logs)
    spec = spec or LoadSpec()
    file, sources = (sourced.file, dict(sourced.sources)) if sourced else (spec.path, {})
    running = RunningConfig(cfg, file, sources, time.time())
    try:
        trio.run(_main, cfg, spec, running)
    except ReverieError as e:
        logs.event(log, logging.ERROR, "cannot_run", error=e.message, code=e.code)
        return EXIT_CONFIG
    except OSError as e:
        logs.event(log, logging.ERROR, "cannot_run", error=str(e))
        return EXIT_FAILURE
    return 0


async def _main(cfg: Config, spec: LoadSpec, running: RunningConfig) -> None:
    data = cfg.data_path
    datadir.prepare(data)
    with datadir.DataDirLock(data):
        started = time.monotonic()
        db = await Database.open(
            data,
            readers=cfg.store.readers,
            synchronous=cfg.store.synchronous,
            max_db_mb=cfg.store.max_db_mb,  # faults: database size cap
        )
        try:
            await _Daemon(cfg, db, started, spec, running).run()
        finally:
            with trio.CancelScope(shield=True):
                await db.close()
            logs.event(log, logging.INFO, "stopped", db="closed_cleanly")


class _Daemon:
    def __init__(
        self, cfg: Config, db: Database, started: float, spec: LoadSpec, running: RunningConfig
    ) -> None:
        self.cfg = cfg
        self.spec = spec  # config (issue 6): what SIGHUP re-reads
        self.running = running  # config (issue 6): what `config_show` reports
        self.db = db
        self.started = started
        self.notifier = Notifier()
        self.stop_requested = trio.Event()
        self.server: Server | None = None
        self.indexer: Indexer | None = None
        self.dreams: Dreams | None = None
        self.dreaming = ""  # what sd_notify STATUS shows while a phase runs

    async def run(self) -> None:
        sock, activated = self._listening_socket()
        path = self.cfg.socket_path
        owned_inode = None if activated else os.stat(path).st_ino
        info = ServerInfo(
            data_dir=str(self.cfg.data_path),
            socket=str(path),
            socket_activated=activated,
            started=self.started,
            connections=lambda: server.active,
        )
        self.indexer = self._indexer()
        if self.indexer is not None:
            self.indexer.busy = METRICS.serving  # load (issue 7): paced while serving
            self.indexer.quiet = METRICS.wait_quiet  # ... in the gaps between requests
        ix0 = self.indexer
        self.dreams = Dreams(  # manual runs over RPC, scheduled ones below
            self.db,
            self.cfg.data_path,
            self.cfg.dreams,
            written=ix0.notify if ix0 is not None else lambda: None,
            rem_index=ix0.view if ix0 is not None else None,  # REM: neighbours by vector
            on_status=self._dream_status,
            busy=METRICS.serving,  # dreams pace themselves only while clients are served
            compact=ix0.compact if ix0 is not None else lambda: None,  # deep sleep
        )
        self.dreams.plan_in_process = _plan_command(self.cfg)  # load (issue 7)
        workers = SearchWorkers(self.db.path, self.cfg.search.workers)
        dispatcher = Dispatcher(
            self.db,
            info,
            search=self.cfg.search,
            indexer=self.indexer,
            sessions=self.cfg.sessions,  # when a silent session is stale
            dreams=self.dreams,
            running_config=self.running,  # config (issue 6): config_show
            workers=workers,  # load (issue 7): searches outside the daemon's GIL
        )
        server = Server(
            self.cfg.daemon,
            dispatcher.handle,
            access(self.cfg.daemon.allowed_uids, self.cfg.daemon.socket_group),
        )
        self.server = server
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, server)
                await nursery.start(server.serve, sock)
                self._announce_ready(activated)
                # What start-up allocated lives as long as the daemon: keep the
                # cyclic GC from walking it on every full collection.
                gc.freeze()
                if self.indexer is not None:
                    await nursery.start(self.indexer.run)
                if interval := watchdog_interval():
                    nursery.start_soon(watchdog_loop, self.notifier, interval, self._healthy)
                nursery.start_soon(self._status_loop, server)
                await nursery.start(workers.run)  # idle until the first search
                # Drain the hooks' spool now, then on a timer
                ix = self.indexer
                drainer = SpoolDrainer(
                    self.db,
                    spool.dir_for(self.cfg),
                    interval_s=self.cfg.events.spool_interval_s,
                    on_written=ix.notify if ix is not None else lambda: None,
                )
                nursery.start_soon(drainer.run)
                await nursery.start(self._dream_scheduler)
                await self.stop_requested.wait()
                if self.dreams is not None:
                    # A phase planning in a worker thread stops at its next check
                    # (phases/cancel.py), not after the grace period.
                    self.dreams.shutdown()
                if self.indexer is not None:
                    self.indexer.stop()
                await self._drain(server)
                nursery.cancel_scope.cancel()
        finally:
            if owned_inode is not None:
                _unlink_if_ours(path, owned_inode)

    def _indexer(self) -> Indexer | None:
        if not self.cfg.index.enabled:
            return None
        embedder = make_embedder(self.cfg.embedder)
        return Indexer(
            self.db, embedder, self.cfg.data_path, self.cfg.index, on_progress=self._index_progress
        )

    def _index_progress(self, p: Progress) -> None:
        if p.phase == "rebuilding":
            share = f" {100 * p.done // p.total}%" if p.total else ""
            self.notifier.status(f"building the vector index ({p.model}){share}")
        elif p.phase == "failed":
            self.notifier.status(f"vector index unavailable: {p.message}")

    def _listening_socket(self) -> tuple[socket.socket, bool]:
        sock = activated_socket()
        if sock is not None:
            return sock, True
        d = self.cfg.daemon
        return bind_unix_socket(
            self.cfg.socket_path, mode=int(d.socket_mode, 8), group=d.socket_group
        ), False

    def _announce_ready(self, activated: bool) -> None:
        elapsed = time.monotonic() - self.started
        status = f"serving on {self.cfg.socket_path}"
        self.notifier.ready(status)
        logs.event(
            log,
            logging.INFO,
            "ready",
            version=__version__,
            pid=os.getpid(),
            socket=self.cfg.socket_path,
            activated=activated,
            data_dir=self.cfg.data_path,
            config=self.running.file or "none",
            log_level=self.cfg.daemon.log_level,
            startup_ms=round(elapsed * 1000),
        )

    async def _drain(self, server: Server) -> None:
        grace = self.cfg.daemon.grace_period_s
        self.notifier.stopping()
        logs.event(log, logging.INFO, "stopping", connections=server.active, grace_s=grace)
        server.begin_shutdown()
        with trio.move_on_after(grace):
            await server.finished.wait()
        if not server.finished.is_set():
            logs.event(log, logging.WARNING, "grace_over", closing_connections=server.active)
            server.force_close()
            await server.finished.wait()

    async def _signals(self, server: Server) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload()
                elif not self.stop_requested.is_set():
                    logs.event(log, logging.INFO, "signal", signal=signal.Signals(signum).name)
                    self.stop_requested.set()
                else:
                    logs.event(
                        log,
                        logging.WARNING,
                        "signal",
                        signal=signal.Signals(signum).name,
                        second=True,
                        action="force_close",
                    )
                    server.force_close()

    def _reload(self) -> None:
        """SIGHUP: re-read the config; apply what can change while running.

        Keys fixed at start keep their running value and are reported (logged,
        and in `config_show`) as needing a restart, compared with what runs.
        """
        self.notifier.send(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            loaded = self.spec.load_sourced()
        except ReverieError as e:
            self.running.last_reload = ReloadInfo(at=time.time(), ok=False, error=e.message)
            logs.event(log, logging.ERROR, "reload", ok=False, kept="running", error=e.message)
            self.notifier.send("READY=1")
            return
        new, errors = loaded.config, list[str]()
        changed = changed_keys(self.cfg, new)
        applied = [k for k in changed if reloadable(k)]
        restart = [k for k in changed if not reloadable(k)]
        if new.daemon.log_level != self.cfg.daemon.log_level:
            logs.set_level(new.daemon.log_level)
            self.cfg.daemon.log_level = new.daemon.log_level
        if new.embedder != self.cfg.embedder and (error := self._reload_embedder(new)):
            errors.append(error)
            applied = [k for k in applied if not k.startswith("embedder.")]
        # Read per request: updated in place, the dispatcher holds these objects.
        workers = self.cfg.search.workers  # load (issue 7): read at start only
        copy_into(self.cfg.search, new.search)
        self.cfg.search.workers = workers
        copy_into(self.cfg.sessions, new.sessions)
        if new.store.max_db_mb != self.cfg.store.max_db_mb:  # faults: size cap
            self.db.set_size_cap(new.store.max_db_mb)
            self.cfg.store.max_db_mb = new.store.max_db_mb
        self._reload_dreams(new)
        r = self.running
        old_sources = r.sources
        r.sources = {k: v for k, v in loaded.sources.items() if k not in restart}
        r.sources.update({k: old_sources[k] for k in restart if k in old_sources})
        r.file, r.loaded_at, r.pending_restart = loaded.file, time.time(), restart
        r.last_reload = ReloadInfo(
            at=r.loaded_at,
            ok=not errors,
            error="; ".join(errors),
            applied=applied,
            needs_restart=restart,
        )
        if restart:
            logs.event(log, logging.WARNING, "reload_needs_restart", keys=restart)
        logs.event(
            log,
            logging.INFO if not errors else logging.ERROR,
            "reload",
            ok=not errors,
            file=loaded.file or "none",
            applied=applied,
            needs_restart=restart,
            log_level=self.cfg.daemon.log_level,
        )
        self.notifier.send("READY=1")

    def _reload_embedder(self, new: Config) -> str:
        """Switch the embedder (re-embedding in the background); "" or why not."""
        if self.indexer is None:  # no vector index: nothing embeds
            self.cfg.embedder = new.embedder
            return ""
        try:
            embedder = make_embedder(new.embedder)
        except ReverieError as e:
            logs.event(log, logging.ERROR, "reload_embedder", kept="running", error=e.message)
            return f"embedder: {e.message}"
        self.cfg.embedder = new.embedder
        self.indexer.switch_model(embedder)
        logs.event(log, logging.INFO, "reload_embedder", model=embedder.model_id, reembed=True)
        return ""

    # -- dreams ---------------------------------------------------------------------

    async def _dream_scheduler(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Imported here: croniter is needed only once the daemon runs.
        from reverie.phases.schedule import Scheduler, compile_schedules

        dreams = self.dreams
        assert dreams is not None
        # Every phase is compiled (the config is checked whole); Dreams.scheduled
        # skips the ones not built yet, logging once, so their slots cost nothing.
        scheduler = Scheduler(
            compile_schedules(self.cfg.dreams),
            dreams.scheduled,
            last_run=dreams.last_run,
            jitter_s=self.cfg.dreams.jitter_s,
        )
        dreams.scheduler = scheduler
        await scheduler.serve(task_status=task_status)

    def _dream_status(self, text: str) -> None:
        self.dreaming = text
        if text:
            self.notifier.status(text)

    def _reload_dreams(self, new: Config) -> None:
        from reverie.phases.schedule import compile_schedules

        dreams = self.dreams
        if dreams is None or new.dreams == self.cfg.dreams:
            return
        if dreams.scheduler is not None:
            # config.load() already compiled the new section: a bad cron never gets here.
            dreams.scheduler.reconfigure(compile_schedules(new.dreams), new.dreams.jitter_s)
        # The phases' thresholds ([dreams.light_sleep] ...): fresh phase objects,
        # built as at start; a run in progress keeps the ones it started with.
        ix = self.indexer
        view = ix.view if ix is not None else None
        fresh = Dreams(self.db, self.cfg.data_path, new.dreams, rem_index=view)
        dreams.phases = fresh.phases
        dreams.cfg = self.cfg.dreams = new.dreams
        dreams.plan_in_process = _plan_command(new)
        logs.event(log, logging.INFO, "reload_dreams", preset=new.dreams.preset)

    def _healthy(self) -> bool:
        return self.db.writer.alive

    async def _status_loop(self, server: Server) -> None:
        while True:
            self.notifier.status(
                f"serving: connections={server.active} requests={server.requests} "
                f"commits={self.db.writer.commits}"
                + (f"; {self.dreaming}" if self.dreaming else "")
            )
            await trio.sleep(STATUS_INTERVAL_S)


def _unlink_if_ours(path: Path, inode: int) -> None:
    """Remove the socket file we bound, unless someone replaced it meanwhile."""
    try:
        if os.stat(path).st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


def _plan_command(cfg: Config) -> list[str] | None:
    """How a dream run plans out of process (phases/plan_worker.py), if it does."""
    if not cfg.dreams.plan_process:
        return None
    return [sys.executable, "-m", "reverie.phases.plan_worker"]
