"""Serving the sessions, world-state, claims, sitrep and brief requests.

rpc/dispatch.py hands every request of rpc/proto_sessions.py here. Writes go
through the group-committing writer (one job, one savepoint); reads run on a
reader connection, so a sitrep or a brief sees one consistent snapshot.
The moment of each request is taken once, here, and passed down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import apsw
from reverie.daemon.config import SearchConfig, SessionsConfig
from reverie.errors import UnknownMethod
from reverie.rpc.proto_sessions import (
    Brief,
    BriefResult,
    Claim,
    ClaimResult,
    Claims,
    ClaimsResult,
    Release,
    ReleaseResult,
    SessionEnd,
    SessionGet,
    SessionHeartbeat,
    SessionInfo,
    SessionList,
    SessionListResult,
    SessionLog,
    SessionLogEntry,
    SessionLogs,
    SessionLogsResult,
    SessionStart,
    SessionStartResult,
    Sitrep,
    SitrepResult,
    WorldGet,
    WorldSet,
    WorldState,
)
from reverie.store import brief, claims, sessions, sitrep, world
from reverie.store.database import Database
from reverie.store.indexer import Indexer
from reverie.store.sessions import Clock

T = TypeVar("T")

Request = (
    SessionStart
    | SessionHeartbeat
    | SessionEnd
    | SessionGet
    | SessionList
    | SessionLog
    | SessionLogs
    | WorldGet
    | WorldSet
    | Claim
    | Release
    | Claims
    | Sitrep
    | Brief
)
Result = (
    SessionStartResult
    | SessionInfo
    | SessionListResult
    | SessionLogEntry
    | SessionLogsResult
    | WorldState
    | ClaimResult
    | ReleaseResult
    | ClaimsResult
    | SitrepResult
    | BriefResult
)


@dataclass(slots=True)
class Coordination:
    db: Database
    sessions_cfg: SessionsConfig
    search_cfg: SearchConfig
    indexer: Indexer | None

    def clock(self) -> Clock:
        return Clock(now=time.time(), stale_after=self.sessions_cfg.stale_after_s)

    async def _write(self, fn: Callable[[apsw.Connection, Clock], T]) -> T:
        clock = self.clock()
        return await self.db.writer.run(lambda c: fn(c, clock))

    async def _read(self, fn: Callable[[apsw.Connection, Clock], T]) -> T:
        clock = self.clock()
        return await self.db.read(lambda c: fn(c, clock))

    async def handle(self, req: Request) -> Result:
        match req:
            case SessionStart():
                info, created = await self._write(lambda c, k: sessions.start(c, req, k))
                return SessionStartResult(session=info, created=created)
            case SessionHeartbeat(session_id=sid, progress=progress):
                return await self._write(lambda c, k: sessions.heartbeat(c, sid, progress, k))
            case SessionEnd(session_id=sid, summary=summary, status=status):
                return await self._write(lambda c, k: sessions.end(c, sid, summary, status, k))
            case SessionGet(session_id=sid):
                return await self._read(lambda c, k: sessions.get(c, sid, k))
            case SessionList():
                return await self._list(req)
            case SessionLog():
                return await self._write(lambda c, k: sessions.log(c, req, k))
            case SessionLogs(session_id=sid, limit=limit, after_id=after):
                entries = await self.db.read(
                    lambda c: sessions.logs(c, sid, limit=limit, after_id=after)
                )
                return SessionLogsResult(entries=entries)
            case WorldGet(workspace=ws, version=version):
                return await self.db.read(lambda c: world.get(c, ws, version))
            case WorldSet():
                return await self._write(lambda c, k: world.replace(c, req, k))
            case Claim():
                return await self._write(lambda c, k: claims.claim(c, req, k))
            case Release():
                return await self._write(lambda c, k: claims.release(c, req, k))
            case Claims(workspace=ws, resource=resource, session_id=holder):
                found = await self._read(
                    lambda c, k: claims.held(c, ws, k, resource=resource, session_id=holder)
                )
                return ClaimsResult(claims=found)
            case Sitrep(workspace=ws, budget=budget, recent=recent):
                return await self._read(
                    lambda c, k: sitrep.gather(c, ws, k, budget=budget, recent=recent)
                )
            case Brief():
                return await self._brief(req)
            case _:
                raise UnknownMethod(f"method {type(req).__name__} is not served here")

    async def _list(self, req: SessionList) -> SessionListResult:
        pick = {"active": sessions.active, "recent": sessions.recent, "all": sessions.every}
        fn = pick[req.which]
        found = await self._read(lambda c, k: fn(c, req.workspace, k, req.limit))
        return SessionListResult(sessions=found, stale_after_s=self.sessions_cfg.stale_after_s)

    async def _brief(self, req: Brief) -> BriefResult:
        cfg, indexer = self.search_cfg, self.indexer
        composed = await self._read(lambda c, k: brief.compose(c, req, k, cfg=cfg, indexer=indexer))
        if cfg.record_recalls and composed.recalls:
            self.db.record_recalls(req.prompt[: brief.QUERY_CHARS], composed.recalls)
        return composed.result
