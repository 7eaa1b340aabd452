"""Server-side dispatch: one typed request in, one typed result out.

The connection layer (daemon/server.py) has already decoded and validated the
request, and handles `hello` itself; here each method maps to the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from reverie import __version__
from reverie.errors import UnknownMethod
from reverie.rpc.protocol import (
    Export,
    Forget,
    Get,
    Import,
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
from reverie.store.database import Database


@dataclass(slots=True)
class ServerInfo:
    data_dir: str
    socket: str
    socket_activated: bool
    started: float
    connections: Callable[[], int]


class Dispatcher:
    def __init__(self, db: Database, info: ServerInfo) -> None:
        self.db = db
        self.info = info

    async def handle(self, req: Request) -> Result:
        match req:
            case Ping():
                return Pong()
            case Remember():
                return await self.db.remember(req)
            case Get(memory_id=mid):
                return await self.db.get(mid)
            case Forget(memory_id=mid, purge=purge, reason=reason):
                return await self.db.forget(mid, purge=purge, reason=reason)
            case Search(query=q, workspace=ws, limit=limit):
                return SearchResult(hits=await self.db.search(q, workspace=ws, limit=limit))
            case Export(workspace=ws, after_id=after, limit=limit, include_forgotten=inc):
                return await self.db.export_page(
                    workspace=ws, after_id=after, limit=limit, include_forgotten=inc
                )
            case Import(records=records):
                return await self.db.import_records(records)
            case Status():
                return await self._status()
            case _:
                raise UnknownMethod(f"method {type(req).__name__} is not served here")

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
        )
