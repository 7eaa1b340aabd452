"""The event log: what harness hooks post, stored once each, turned into observations.

A batch is handled in two steps. :func:`prepare` does the CPU work outside
the writer (redaction, trimming, JSON, the observation's text and hash), so
that it overlaps with the writer's commits; :func:`store` then runs as one
writer job, in one transaction: drop the events of workspaces whose capture
is off, append the rest (``ON CONFLICT DO NOTHING`` on the idempotency key:
a retried batch or a spool drained twice stores nothing new), make an
observation memory of each new event that carries content (deduplicated by
content hash per workspace, as `remember` does; the FTS index fills through
the memories' trigger, the change sequence as for any memory), and note
each session's activity in ``sessions``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import apsw
import msgspec
import trio
from reverie.errors import InvalidParams
from reverie.rpc.proto_events import (
    Capture,
    CaptureResult,
    CaptureState,
    Event,
    ListEvents,
    ListEventsResult,
    PostEvents,
    PostEventsResult,
    StoredEvent,
)
from reverie.store.database import Database
from reverie.store.memories import next_seq
from reverie.store.observations import (
    PAYLOAD_MAX_BYTES,
    Observation,
    flat,
    jsonable,
    observe,
    trim_payload,
)
from reverie.store.redaction_objects import redact_obj, redact_objs_deriving

_json = msgspec.json.Encoder()
_json_decode = msgspec.json.Decoder(list[tuple[str, int]]).decode
# Batches up to this size are prepared in the request's task; larger ones in
# a worker thread, so that preparing one batch overlaps the commit of another.
# Payload size counts too: redacting one 1 MB payload takes tens of
# milliseconds, which the event loop must not spend.
_INLINE_BATCH = 16
_INLINE_BYTES = 64 * 1024

SESSION_END = "SessionEnd"
SESSION_START = "SessionStart"


@dataclass(slots=True)
class Prepared:
    """An event ready to store: payload redacted, trimmed and encoded."""

    event: Event
    at: float
    payload: str  # JSON
    observation: Observation | None  # text redacted
    obs_hash: str
    tags: str  # JSON
    row: tuple[Any, ...] = ()  # its row of events, in _EVENT_COLUMNS order


def _epoch(value: dt.datetime | None, default: float) -> float:
    if value is None:
        return default
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _encode(payload: dict[str, Any]) -> str:
    try:
        return _json.encode(payload).decode()
    except (TypeError, ValueError, OverflowError):  # msgpack carried something JSON cannot
        return _json.encode(jsonable(payload)).decode()


def redact_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """``redact_obj(payload)``.

    The strings every event of a session repeats (its envelope: session id,
    paths, tool name; keys; repeated commands) cost a set lookup each:
    redaction remembers the strings it found clean.
    """
    return dict(redact_obj(payload))


def observation_hash(text: str) -> str:
    """memories.content_hash, computed the same way at a third of the cost.

    str.split() and the regex ``\\s`` agree on what whitespace is (every code
    point; tests/test_events.py checks), so joining the words with single
    spaces is what content_hash's substitution and strip produce.
    """
    return hashlib.sha256(flat(text).encode()).hexdigest()[:32]


def prepare(events: Sequence[Event], now: float) -> list[Prepared]:
    """Redact, observe, trim and encode a batch of events (CPU only: no database)."""
    # Redact first, then observe (a long output concludes at its end), then
    # trim: trimming first could cut a secret into a piece that no longer
    # looks like one. The observation is built from the redacted fields and
    # redacted again, in case joining them assembled a secret (observe()
    # already left out fields that were nothing but redaction markers);
    # redact_objs_deriving does both, for the whole batch, with one look at
    # the strings when none holds a secret.
    made: list[Observation | None] = [None] * len(events)

    def observe_text(i: int, redacted: Any) -> str:
        obs = made[i] = observe(events[i].type, redacted)
        return obs.text if obs is not None else ""

    redacted = redact_objs_deriving([e.payload for e in events], observe_text)
    out = []
    for event, obs, (payload, text) in zip(events, made, redacted, strict=True):
        obs_hash = tags = ""
        if obs is not None:
            if text is not obs.text:
                obs = Observation(text, obs.tags, obs.importance)
            obs_hash = observation_hash(text)
            tags = _tags_json(obs.tags)
        at = _epoch(event.at, now)
        data = _payload_json(payload)
        row = (
            event.key,
            event.harness,
            event.session_id,
            event.workspace,
            event.type,
            data,
            at,
            now,
        )
        out.append(Prepared(event, at, data, obs, obs_hash, tags, row))
    return out


def _payload_json(payload: dict[str, Any]) -> str:
    """``_encode(trim_payload(payload))``, encoding a payload that fits only once."""
    try:
        data = _json.encode(payload)
    except (TypeError, ValueError, OverflowError, RecursionError):
        data = None
    if data is None or len(data) > PAYLOAD_MAX_BYTES:
        return _encode(trim_payload(payload))
    return data.decode()


_tags_cache: dict[tuple[str, ...], str] = {}


def _tags_json(tags: list[str]) -> str:
    """The tags as JSON; the few sets of tags observations have are encoded once."""
    key = tuple(tags)
    encoded = _tags_cache.get(key)
    if encoded is None:
        encoded = _json.encode(tags).decode()
        if len(_tags_cache) < 1024:
            _tags_cache[key] = encoded
    return encoded


# -- writing ------------------------------------------------------------------------
#
# Rows go in with multi-row INSERT statements, at most _CHUNK rows each, not
# one statement per row: every statement that fires the memories' FTS
# trigger makes FTS5 flush its pending terms (a statement savepoint), which
# costs 4-5x the insert itself. Chunk sizes are powers of two so that a few
# statement texts serve every batch size (and stay in APSW's cache).

_CHUNK = 256
_EVENT_COLUMNS = "idem_key, harness, session_id, workspace, type, payload, created_at, received_at"
_MEMORY_COLUMNS = (
    "uid, workspace, kind, content, tags, importance, tier, provenance, "
    "created_at, observed_at, updated_at, content_hash, metadata, seq"
)
_sql_cache: dict[tuple[str, int], str] = {}


def _values(n: int, width: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * n)


def _insert_sql(table: str, n: int) -> str:
    sql = _sql_cache.get((table, n))
    if sql is None:
        if table == "events":
            sql = (
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES {_values(n, 8)} "
                "ON CONFLICT (idem_key) DO NOTHING"
            )
        else:
            sql = f"INSERT INTO memories ({_MEMORY_COLUMNS}) VALUES {_values(n, 14)}"
        _sql_cache[(table, n)] = sql
    return sql


def _chunks(rows: Sequence[Any]) -> list[Sequence[Any]]:
    """``rows`` in power-of-two chunks of at most _CHUNK, largest first."""
    out = []
    pos = 0
    size = _CHUNK
    while pos < len(rows):
        while size > len(rows) - pos:
            size //= 2
        out.append(rows[pos : pos + size])
        pos += size
    return out


# Only the V1 columns: store/sessions.py owns the rest of the row.
_UPSERT_SESSION = (
    "INSERT INTO sessions (id, workspace, harness, started_at, last_seen_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "started_at = min(started_at, excluded.started_at), "
    "last_seen_at = max(last_seen_at, excluded.last_seen_at), "
    "harness = CASE WHEN harness = '' THEN excluded.harness ELSE harness END"
)


@dataclass(slots=True)
class _Seen:
    """One session's activity in a batch."""

    workspace: str
    harness: str
    first: float
    last: float
    started: float | None = None
    ended: float | None = None


def capture_off(conn: apsw.Connection) -> set[str]:
    rows = conn.execute("SELECT workspace FROM capture_settings WHERE capture = 0")
    return {ws for (ws,) in rows}


def store(conn: apsw.Connection, batch: Sequence[Prepared], now: float) -> PostEventsResult:
    """Append a prepared batch (one writer job: the caller's transaction)."""
    off = capture_off(conn)
    kept = [p for p in batch if p.event.workspace not in off] if off else list(batch)
    new_ids = _insert_events(conn, kept, now)
    stored: list[tuple[Prepared, int]] = []
    for p in kept:
        # pop: of two events with one key in a batch, the first is stored.
        event_id = new_ids.pop(p.event.key, None)
        if event_id is not None:
            stored.append((p, event_id))
    observations = _insert_observations(conn, stored, now)
    sessions: dict[str, _Seen] = {}
    for p, _ in stored:
        if p.event.session_id:
            _note_session(sessions, p.event, p.at)
    for sid, seen in sessions.items():
        _write_session(conn, sid, seen)
    return PostEventsResult(
        stored=len(stored),
        duplicates=len(kept) - len(stored),
        observations=observations,
        dropped=len(batch) - len(kept),
    )


_ROWID_MAX = 2**63 - 1


def _insert_events(conn: apsw.Connection, kept: Sequence[Prepared], now: float) -> dict[str, int]:
    """Append the events whose key is new; their key -> id.

    Not with RETURNING: APSW hands the GIL back and forth on every step, one
    per returned row, and a writer that waits for the GIL while a batch is
    being prepared waits up to the switch interval each time. New rows get
    ids above the largest (SQLite's rule, until that reaches the largest
    integer), so one range query finds them, as one JSON value: one step.
    """
    if not kept:
        return {}
    last = conn.execute("SELECT coalesce(max(id), 0) FROM events").get
    if last == _ROWID_MAX:  # then SQLite picks ids at random
        return _insert_events_returning(conn, kept, now)
    inserted = 0
    for chunk in _chunks(kept):
        conn.execute(_insert_sql("events", len(chunk)), _event_args(chunk, now))
        inserted += conn.changes()
    if not inserted:
        return {}
    if inserted == len(kept) and last + inserted <= _ROWID_MAX:
        # Every row went in, in order, each one id above the last (the table
        # has no AUTOINCREMENT, nothing else writes in this transaction, and
        # ids are below the largest integer): no need to ask for them.
        return {p.event.key: last + n for n, p in enumerate(kept, 1)}
    pairs = conn.execute(
        "SELECT json_group_array(json_array(idem_key, id)) FROM events WHERE id > ?", (last,)
    ).get
    return dict(_json_decode(pairs))


def _insert_events_returning(
    conn: apsw.Connection, kept: Sequence[Prepared], now: float
) -> dict[str, int]:
    new_ids: dict[str, int] = {}
    for chunk in _chunks(kept):
        sql = _insert_sql("events", len(chunk)) + " RETURNING idem_key, id"
        for key, event_id in conn.execute(sql, _event_args(chunk, now)):
            new_ids[key] = event_id
    return new_ids


def _event_args(chunk: Sequence[Prepared], now: float) -> list[Any]:
    if all(p.row and p.row[-1] == now for p in chunk):  # built by prepare() for this batch
        return list(itertools.chain.from_iterable(p.row for p in chunk))
    args: list[Any] = []
    for p in chunk:
        ev = p.event
        args += (ev.key, ev.harness, ev.session_id, ev.workspace, ev.type, p.payload, p.at, now)
    return args


def _insert_observations(
    conn: apsw.Connection, stored: Sequence[tuple[Prepared, int]], now: float
) -> int:
    """One observation memory per new event with content, unless its text is already known."""
    wanted = [(p, eid) for p, eid in stored if p.observation is not None]
    if not wanted:
        return 0
    by_workspace: dict[str, list[str]] = {}
    for p, _ in wanted:
        by_workspace.setdefault(p.event.workspace, []).append(p.obs_hash)
    seen: set[tuple[str, str]] = set()
    for ws, hashes in by_workspace.items():
        for (known,) in conn.execute(
            "SELECT content_hash FROM memories WHERE workspace = ? AND state = 'active' "
            "AND content_hash IN (SELECT value FROM json_each(?))",
            (ws, _json.encode(hashes).decode()),
        ):
            seen.add((ws, known))
    rows: list[tuple[Any, ...]] = []
    seq = next_seq(conn)
    prefix, uids = _uids(now, len(wanted))
    for n, (p, event_id) in enumerate(wanted):
        ev, obs = p.event, p.observation
        assert obs is not None
        if (ev.workspace, p.obs_hash) in seen:
            continue  # noise is not stored twice
        seen.add((ev.workspace, p.obs_hash))
        meta = {"harness": ev.harness, "event": ev.type, "event_id": event_id}
        if ev.session_id:
            meta["session_id"] = ev.session_id
        rows.append(
            (
                prefix + uids[20 * n : 20 * n + 20],
                ev.workspace,
                "observation",
                obs.text,
                p.tags,
                obs.importance,
                "short",
                f'{{"events":[{event_id}]}}',
                now,
                p.at,
                now,
                p.obs_hash,
                _json.encode(meta).decode(),
                seq,
            )
        )
        seq += 1
    for chunk in _chunks(rows):
        conn.execute(_insert_sql("memories", len(chunk)), [v for row in chunk for v in row])
    return len(rows)


def _uids(now: float, count: int) -> tuple[str, str]:
    """A prefix and ``count`` 20-digit suffixes (in one string) of 128-bit uids.

    Time-ordered, as UUIDv7 is: 48 bits of milliseconds, then 80 random
    bits. A batch's new uids then land together at the end of the uid
    index, not on as many random pages of it (each of which the commit
    rewrites): a quarter of the memory insert's cost, more as the store grows.
    """
    ms = int(now * 1000) & 0xFFFF_FFFF_FFFF
    return f"{ms:012x}", os.urandom(10 * count).hex()  # one system call, not one per memory


def _note_session(sessions: dict[str, _Seen], ev: Event, at: float) -> None:
    assert ev.session_id is not None
    seen = sessions.get(ev.session_id)
    if seen is None:
        seen = sessions[ev.session_id] = _Seen(ev.workspace, ev.harness, at, at)
    else:
        seen.first, seen.last = min(seen.first, at), max(seen.last, at)
    if ev.type == SESSION_END:
        seen.ended = at if seen.ended is None else max(seen.ended, at)
    elif ev.type == SESSION_START:
        seen.started = at if seen.started is None else max(seen.started, at)


def _write_session(conn: apsw.Connection, sid: str, seen: _Seen) -> None:
    conn.execute(_UPSERT_SESSION, (sid, seen.workspace, seen.harness, seen.first, seen.last))
    if seen.ended is not None and (seen.started is None or seen.ended >= seen.started):
        conn.execute(
            "UPDATE sessions SET status = 'completed', ended_at = ? WHERE id = ? "
            "AND (ended_at IS NULL OR ended_at < ?)",
            (seen.ended, sid, seen.ended),
        )
    elif seen.started is not None:
        # A session resumed after it ended (Claude Code's --resume keeps the id).
        conn.execute(
            "UPDATE sessions SET status = 'active', ended_at = NULL "
            "WHERE id = ? AND status = 'completed' AND ended_at < ?",
            (sid, seen.started),
        )


def _small(events: Sequence[Event]) -> bool:
    """Cheap enough to prepare on the event loop (a hook's event, typically)."""
    if len(events) > _INLINE_BATCH:
        return False
    size = 0
    for e in events:
        size += len(_json.encode(e.payload))
        if size > _INLINE_BYTES:
            return False
    return True


async def post(db: Database, events: Sequence[Event]) -> PostEventsResult:
    """Store a batch; return once its transaction has committed."""
    if not events:
        return PostEventsResult(stored=0, duplicates=0, observations=0)
    now = time.time()
    try:
        if _small(events):
            batch = prepare(events, now)
        else:
            batch = await trio.to_thread.run_sync(prepare, events, now)
    except (TypeError, ValueError) as e:  # msgpack carries what JSON cannot (Ext, nil keys)
        raise InvalidParams(f"an event payload must be JSON-compatible: {e}") from None
    return await db.writer.run(lambda conn: store(conn, batch, now))


async def serve(
    db: Database, req: PostEvents | ListEvents | Capture, *, written: Callable[[int], None]
) -> PostEventsResult | ListEventsResult | CaptureResult:
    """The events feature's RPC methods (rpc/dispatch.py delegates here)."""
    match req:
        case PostEvents(events=events):
            result = await post(db, events)
            if result.observations:
                written(result.observations)  # new memories: wake the vector indexer
            return result
        case ListEvents():
            return await db.read(lambda conn: list_events(conn, req))
        case Capture(workspace=workspace, enabled=None):
            return CaptureResult(workspaces=await db.read(lambda c: capture_states(c, workspace)))
        case Capture(workspace=str(workspace), enabled=bool(enabled)):
            state = await db.writer.run(lambda c: set_capture(c, workspace, enabled), single=True)
            return CaptureResult(workspaces=[state])
        case _:
            raise InvalidParams("turning capture on or off needs a workspace")


# -- capture settings ----------------------------------------------------------------


def set_capture(conn: apsw.Connection, workspace: str, enabled: bool) -> CaptureState:
    now = time.time()
    conn.execute(
        "INSERT INTO capture_settings (workspace, capture, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (workspace) DO UPDATE SET capture = excluded.capture, "
        "updated_at = excluded.updated_at",
        (workspace, int(enabled), now),
    )
    return CaptureState(workspace=workspace, enabled=enabled, updated_at=_ts(now))


def capture_states(conn: apsw.Connection, workspace: str | None) -> list[CaptureState]:
    """The setting of one workspace (on, if never set), or every setting stored."""
    if workspace is None:
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT workspace, capture, updated_at FROM capture_settings ORDER BY workspace"
        ).fetchall()
        return [CaptureState(workspace=w, enabled=bool(c), updated_at=_ts(u)) for w, c, u in rows]
    row = conn.execute(
        "SELECT capture, updated_at FROM capture_settings WHERE workspace = ?", (workspace,)
    ).fetchone()
    if row is None:
        return [CaptureState(workspace=workspace, enabled=True, updated_at=None)]
    return [CaptureState(workspace=workspace, enabled=bool(row[0]), updated_at=_ts(row[1]))]


# -- reading ---------------------------------------------------------------------------


def _ts(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def list_events(conn: apsw.Connection, req: ListEvents) -> ListEventsResult:
    where: list[str] = []
    args: list[Any] = []
    for test, value in (
        ("workspace = ?", req.workspace),
        ("session_id = ?", req.session_id),
        ("type = ?", req.type),
        ("harness = ?", req.harness),
        ("id < ?", req.before_id),
    ):
        if value is not None:
            where.append(test)
            args.append(value)
    sql = (
        "SELECT id, idem_key, harness, session_id, workspace, type, payload, created_at, "
        "received_at FROM events"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY id DESC LIMIT ?"
    )
    rows: list[tuple[Any, ...]] = conn.execute(sql, (*args, req.limit + 1)).fetchall()
    more = len(rows) > req.limit
    rows = rows[: req.limit]
    events = [
        StoredEvent(
            id=eid,
            key=key,
            harness=harness,
            type=etype,
            workspace=ws,
            session_id=sid,
            # Redacted again on the way out, as memories are.
            payload=redact_obj(json.loads(payload)),
            at=_ts(at),
            received_at=None if received is None else _ts(received),
        )
        for eid, key, harness, sid, ws, etype, payload, at, received in rows
    ]
    return ListEventsResult(events=events, next_before_id=events[-1].id if more else None)
