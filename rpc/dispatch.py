"""Server-side dispatch: one typed request in, one typed result out.

The connection layer (daemon/server.py) has already decoded and validated the
request, and handles `hello` itself; here each method maps to the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path  # doctor (issue 6)

from reverie import __version__
from reverie.daemon import (
    metrics,  # metrics
    search_workers,  # load (issue 7)
)
from reverie.daemon.config import DreamsConfig, SearchConfig, SessionsConfig
from reverie.daemon.config_sources import RunningConfig  # config (issue 6)
from reverie.daemon.search_workers import SearchWorkers  # load (issue 7)
from reverie.errors import UnknownMethod
from reverie.phases.service import Dreams
from reverie.rpc.proto_backup import Backup, BackupProgress  # backup (issue 6)
from reverie.rpc.proto_config import ConfigShow  # config (issue 6)
from reverie.rpc.proto_doctor import Doctor  # doctor (issue 6)
from reverie.rpc.proto_dreams import DreamsRun, DreamsStatus, DreamsUndo
from reverie.rpc.proto_episodes import (
    CompleteEpisode,
    GetEpisode,
    ListEpisodes,
    LogStep,
    SimilarEpisodes,
    StartEpisode,
)
from reverie.rpc.proto_events import Capture, ListEvents, PostEvents
from reverie.rpc.proto_metrics import Metrics  # metrics
from reverie.rpc.proto_sessions import (
    Brief,
    Claim,
    Claims,
    Release,
    SessionEnd,
    SessionGet,
    SessionHeartbeat,
    SessionList,
    SessionLog,
    SessionLogs,
    SessionStart,
    Sitrep,
    WorldGet,
    WorldSet,
)
from reverie.rpc.proto_versions import Update, Versions  # memory versions
from reverie.rpc.protocol import (
    Export,
    Forget,
    Get,
    Import,
    IndexStatus,
    Ping,
    Pong,
    Remember,
    Request,
    Result,
    Search,
    SearchResult,
    Status,
    StatusResult,
)
from reverie.store import backup as backup_store  # backup (issue 6)
from reverie.store import (
    doctor_checks,  # doctor (issue 6)
    versions,  # memory versions
)
from reverie.store.coordination import Coordination
from reverie.store.database import Database
from reverie.store.episodes import serve as serve_episode
from reverie.store.events import serve as serve_events
from reverie.store.indexer import Indexer


@dataclass(slots=True)
class ServerInfo:
    data_dir: str
    socket: str
    socket_activated: bool
    started: float
    connections: Callable[[], int]


class Dispatcher:
    def __init__(
        self,
        db: Database,
        info: ServerInfo,
        *,
        search: SearchConfig,
        indexer: Indexer | None,
        sessions: SessionsConfig | None = None,
        dreams: Dreams | None = None,
        running_config: RunningConfig | None = None,  # config (issue 6)
        workers: SearchWorkers | None = None,  # load (issue 7): searches in worker processes
    ) -> None:
        self.search_workers = workers
        self.db = db
        self.info = info
        self.search_cfg = search
        self.indexer = indexer
        self.coordination = Coordination(db, sessions or SessionsConfig(), search, indexer)
        # dreams: the daemon passes its own (scheduler, data dir, sd_notify status)
        self.dreams = dreams or Dreams(db, None, DreamsConfig(), written=self._written)
        self.running_config = running_config  # config (issue 6): config_show

    def _written(self, changes: int = 1) -> None:
        if self.indexer is not None:
            self.indexer.notify(changes)  # events (issue 4): how many, a burst defers the index

    async def handle(self, req: Request) -> Result:
        match req:
            case Ping():
                return Pong()
            case Remember():
                remembered = await self.db.remember(req)
                self._written()
                return remembered
            case Get(memory_id=mid):
                return await self.db.get(mid)
            case Forget(memory_id=mid, purge=purge, reason=reason):
                forgotten = await self.db.forget(mid, purge=purge, reason=reason)
                self._written()
                return forgotten
            case Search():
                return await self._search(req)
            case Export(workspace=ws, after_id=after, limit=limit, include_forgotten=inc):
                return await self.db.export_page(
                    workspace=ws, after_id=after, limit=limit, include_forgotten=inc
                )
            case Import(records=records):
                imported = await self.db.import_records(records)
                self._written()
                return imported
            case Status():
                return await self._status()
            # -- events (store/events.py)
            case PostEvents() | ListEvents() | Capture():
                return await serve_events(self.db, req, written=self._written)
            # -- sessions, world state, claims, sitrep, brief (store/coordination.py)
            case (
                SessionStart()
                | SessionHeartbeat()
                | SessionEnd()
                | SessionGet()
                | SessionList()
                | SessionLog()
                | SessionLogs()
                | WorldGet()
                | WorldSet()
                | Claim()
                | Release()
                | Claims()
                | Sitrep()
                | Brief()
            ):
                return await self.coordination.handle(req)
            # -- episodes (store/episodes.py)
            case (
                StartEpisode()
                | LogStep()
                | CompleteEpisode()
                | GetEpisode()
                | ListEpisodes()
                | SimilarEpisodes()
            ):
                cfg, ix, wrote = self.search_cfg, self.indexer, self._written
                return await serve_episode(self.db, req, search=cfg, indexer=ix, written=wrote)
            # -- dreams (phases/service.py)
            case DreamsRun(phase=phase, dry_run=dry):
                return await self.dreams.run(phase, trigger="manual", dry_run=dry)
            case DreamsUndo(run_id=run_id):
                return await self.dreams.undo(run_id)
            case DreamsStatus(window_hours=hours):
                return await self.dreams.status(hours)
            # -- memory versions (store/versions.py)
            case Update() as upd:
                updated = await self.db.writer.run(lambda c: versions.update(c, upd))
                if updated.changed:
                    self._written()
                return updated
            case Versions(memory_id=mid):
                return await self.db.read(lambda c: versions.list_versions(c, mid))
            # -- metrics (daemon/metrics.py)
            case Metrics():
                gauges = await metrics.gauges(self.db, self.indexer, self.info.connections)
                return metrics.METRICS.result(gauges, self.db.writer)
            # -- config (issue 6): the running config, last reload, pending restart
            case ConfigShow() if self.running_config is not None:
                return self.running_config.show()
            # -- backup, doctor (issue 6: store/backup.py, store/doctor_checks.py)
            case Backup() | BackupProgress():
                return await backup_store.serve(self.db, req)
            case Doctor():
                return await doctor_checks.serve(
                    self.db, Path(self.info.data_dir), self.indexer
                )
            case _:
                raise UnknownMethod(f"method {type(req).__name__} is not served here")

    async def _search(self, req: Search) -> SearchResult:
        cfg, indexer = self.search_cfg, self.indexer
        began = time.perf_counter()  # metrics
        found = await search_workers.search(self.db, self.search_workers, req, cfg, indexer)
        metrics.METRICS.searched(found.mode, time.perf_counter() - began)
        if cfg.record_recalls:
            self.db.record_recalls(req.query, [(h.memory.id, h.score) for h in found.hits])
        return SearchResult(hits=found.hits, mode=found.mode, notes=found.notes)  # type: ignore[arg-type]

    async def _index_status(self) -> IndexStatus | None:
        ix = self.indexer
        if ix is None:
            return None
        p = ix.progress
        pending = max(0, await self.db.max_seq() - ix.indexed_seq) if ix.ready else 0
        built, missing = ix.workspace_indexes()
        return IndexStatus(
            phase=p.phase,
            model=ix.model or p.model,
            vectors=ix.vectors,
            indexed_seq=ix.indexed_seq,
            pending=pending,
            done=p.done,
            total=p.total,
            message=p.message,
            workspace_indexes=built,
            workspace_indexes_pending=missing,
            slots=ix.slots,
        )

    async def _status(self) -> StatusResult:
        counts, workspaces = await self.db.counts()
        return StatusResult(
            version=__version__,
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - self.info.started, 3),
            data_dir=self.info.data_dir,
            socket=self.info.socket,
            database=str(self.db.path),
            db_bytes=self.db.size_bytes(),
            schema_version=self.db.schema_version,
            memories=counts,
            workspaces=workspaces,
            connections=self.info.connections(),
            socket_activated=self.info.socket_activated,
            index=await self._index_status(),
            commits=self.db.writer.commits,
            writes=self.db.writer.jobs,
            metrics=metrics.METRICS.summary(  # metrics
                await metrics.gauges(self.db, self.indexer, self.info.connections),
                self.db.writer,
            ),
        )
