"""Episodes: a task's run, its steps, its outcome and reward, and similar past runs.

Lifecycle: ``start`` opens an episode; ``log_step`` appends numbered steps
while it is open; ``complete`` closes it with an outcome, scores it
(store/reward.py) and writes one memory of kind ``episode`` through the
ordinary remember path, so the full-text index, the vector index and
redaction apply to it like to any memory. ``similar`` finds completed
episodes through that memory (see its docstring for the ranking).

Everything that comes from outside (descriptions, notes, step texts and
parameters, context) is redacted before it is stored and again on the way
out, like memories. Long step texts are trimmed with a marker, never refused.

The SQL functions take an APSW connection and run inside the caller's
transaction; ``serve`` maps each request to the writer or a reader.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import apsw
import msgspec
from reverie.errors import Conflict, NotFound
from reverie.rpc.proto_episodes import (
    CompleteEpisode,
    Episode,
    EpisodeContext,
    EpisodeList,
    EpisodeStarted,
    EpisodeStep,
    EpisodeSummary,
    GetEpisode,
    ListEpisodes,
    LogStep,
    Reward,
    SimilarEpisode,
    SimilarEpisodes,
    SimilarEpisodesResult,
    StartEpisode,
    StepLogged,
)
from reverie.rpc.protocol import Remember, Search
from reverie.store import hybrid, memories
from reverie.store.redaction import redact
from reverie.store.redaction_objects import redact_obj
from reverie.store.reward import reward

if TYPE_CHECKING:
    from reverie.daemon.config import SearchConfig
    from reverie.store.database import Database
    from reverie.store.indexer import Indexer

EpisodeRequest = (
    StartEpisode | LogStep | CompleteEpisode | GetEpisode | ListEpisodes | SimilarEpisodes
)
EpisodeResult = EpisodeStarted | StepLogged | Episode | EpisodeList | SimilarEpisodesResult

MEMORY_KIND = "episode"
STEP_TEXT_MAX = 2000  # characters of a step's result or error kept
PARAMS_MAX = 8000  # characters of a step's parameters (as JSON) kept whole
WORKED_MAX, FAILED_MAX, LINE_MAX = 10, 5, 160
SEARCH_QUERY_MAX = 10_000
# Ranking (see `similar`): the weight reward and context carry at most.
REWARD_WEIGHT = 0.5
CONTEXT_WEIGHT = 0.3

_json = msgspec.json.Encoder()
_SUMMARY = (
    "id, workspace, session_id, description, task_type, context, started_at, completed_at, "
    "outcome, notes, reward, step_count, error_count, latency_ms"
)
_STEP = "n, tool, action, parameters, success, result, error, latency_ms, at"


# -- shaping ---------------------------------------------------------------------------


def from_epoch(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def trim(text: str, limit: int = STEP_TEXT_MAX) -> str:
    """The text, cut to `limit` characters with a marker saying how much went."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[trimmed {len(text) - limit} chars]"


def _one_line(text: str, limit: int = LINE_MAX) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _context_json(ctx: EpisodeContext) -> str:
    return _json.encode(redact_obj(msgspec.to_builtins(ctx))).decode()


def _context(text: str) -> EpisodeContext:
    # Built field by field (no validation): a stored value is never refused on the way out.
    d = redact_obj(json.loads(text))
    return EpisodeContext(
        language=str(d.get("language", "")),
        framework=str(d.get("framework", "")),
        domain=str(d.get("domain", "")),
        tags=[str(t) for t in d.get("tags", [])],
    )


def _parameters(params: dict[str, Any]) -> str:
    """Redacted first (a cut could split a secret past recognition), then bounded."""
    text = memories.json_text(redact_obj(params), "parameters")
    if len(text) <= PARAMS_MAX:
        return text
    return _json.encode({"_trimmed": trim(text, STEP_TEXT_MAX)}).decode()


def _summary(row: tuple[Any, ...]) -> EpisodeSummary:
    (eid, ws, sid, desc, ttype, ctx, started, completed, outcome, notes, rew, n, errs, lat) = row
    return EpisodeSummary(
        id=eid,
        workspace=ws,
        session_id=sid,
        description=redact(desc),
        task_type=ttype,
        context=_context(ctx),
        started_at=from_epoch(started),
        completed_at=None if completed is None else from_epoch(completed),
        outcome=outcome,
        notes=redact(notes),
        reward=rew,
        step_count=n,
        error_count=errs,
        latency_ms=lat,
    )


def _step(row: tuple[Any, ...]) -> EpisodeStep:
    n, tool, action, params, success, result, error, latency, at = row
    return EpisodeStep(
        n=n,
        tool=redact(tool),
        action=redact(action),
        parameters=redact_obj(json.loads(params)),
        success=bool(success),
        result=redact(result),
        error=redact(error),
        latency_ms=latency,
        at=from_epoch(at),
    )


def _summary_row(conn: apsw.Connection, episode_id: int) -> EpisodeSummary:
    row = conn.execute(f"SELECT {_SUMMARY} FROM episodes WHERE id = ?", (episode_id,)).fetchone()
    if row is None:
        raise NotFound(f"no episode with id {episode_id}", data={"id": episode_id})
    return _summary(row)


def _steps(conn: apsw.Connection, episode_id: int) -> list[EpisodeStep]:
    rows = conn.execute(
        f"SELECT {_STEP} FROM steps WHERE episode_id = ? ORDER BY n", (episode_id,)
    ).fetchall()
    return [_step(r) for r in rows]


# -- lifecycle (writer) ------------------------------------------------------------------


def start(conn: apsw.Connection, req: StartEpisode) -> EpisodeStarted:
    now = time.time()
    conn.execute(
        "INSERT INTO episodes (workspace, session_id, description, task_type, context, "
        "started_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            req.workspace,
            req.session_id,
            redact(req.description),
            req.task_type,
            _context_json(req.context),
            now,
        ),
    )
    return EpisodeStarted(
        id=conn.last_insert_rowid(), workspace=req.workspace, started_at=from_epoch(now)
    )


def _open(conn: apsw.Connection, episode_id: int, doing: str) -> None:
    """Raise unless the episode exists and is still open."""
    row = conn.execute("SELECT outcome FROM episodes WHERE id = ?", (episode_id,)).fetchone()
    if row is None:
        raise NotFound(f"no episode with id {episode_id}", data={"id": episode_id})
    if row[0] is not None:
        raise Conflict(
            f"episode {episode_id} is already completed ({row[0]}): cannot {doing}; "
            "start a new episode for new work",
            data={"id": episode_id, "outcome": row[0]},
        )


def log_step(conn: apsw.Connection, req: LogStep) -> StepLogged:
    _open(conn, req.episode_id, "log a step")
    failed = not req.success or bool(req.error)
    # The writer runs one job at a time, so the counter numbers steps without gaps.
    n = conn.execute(
        "UPDATE episodes SET step_count = step_count + 1, error_count = error_count + ?, "
        "latency_ms = latency_ms + ? WHERE id = ? RETURNING step_count",
        (int(failed), req.latency_ms, req.episode_id),
    ).get
    conn.execute(
        f"INSERT INTO steps (episode_id, {_STEP}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            req.episode_id,
            n,
            redact(req.tool),
            redact(req.action),
            _parameters(req.parameters),
            int(not failed),
            trim(redact(req.result)),
            trim(redact(req.error)),
            req.latency_ms,
            time.time(),
        ),
    )
    return StepLogged(episode_id=req.episode_id, n=int(n))


def memory_text(ep: EpisodeSummary, r: Reward) -> str:
    """What the `episode` memory says: the task, its context and how it ended."""
    ctx = ep.context
    parts = [
        f"{label} {value}"
        for label, value in (
            ("language", ctx.language),
            ("framework", ctx.framework),
            ("domain", ctx.domain),
            ("tags", ", ".join(ctx.tags)),
        )
        if value
    ]
    lines = [f"Episode #{ep.id} ({ep.task_type}): {ep.description}"]
    if parts:
        lines.append("Context: " + "; ".join(parts))
    outcome = f"Outcome: {ep.outcome}, reward {r.value:.2f}, {ep.step_count} steps"
    if ep.error_count:
        outcome += f" ({ep.error_count} failed)"
    lines.append(outcome + (f". {ep.notes}" if ep.notes else ""))
    return "\n".join(lines)


def complete(conn: apsw.Connection, req: CompleteEpisode) -> Episode:
    """Close, score and remember the episode.

    Completing again with the same outcome and notes returns the episode as it
    is (a retried call must not fail); anything else on a completed episode is
    a conflict.
    """
    ep = _summary_row(conn, req.episode_id)
    notes = trim(redact(req.notes), 10_000)
    if ep.outcome is not None:
        if (ep.outcome, ep.notes) == (req.outcome, notes):
            return get(conn, req.episode_id)
        _open(conn, req.episode_id, f"complete it again as {req.outcome}")
    r = reward(req.outcome, steps=ep.step_count, errors=ep.error_count, latency_ms=ep.latency_ms)
    now = time.time()
    done = msgspec.structs.replace(ep, outcome=req.outcome, notes=notes, reward=r.value)
    # Long tier: a completed episode is already a distillate (task, outcome,
    # reward), the unit of experience this feature exists to keep.
    memory_id, _ = memories.remember(
        conn,
        Remember(
            content=memory_text(done, r),
            workspace=ep.workspace,
            kind=MEMORY_KIND,
            tags=list(ep.context.tags),
            importance=round(0.3 + 0.5 * r.value, 6),
            tier="long",
            metadata={"episode_id": ep.id, "outcome": req.outcome, "reward": r.value},
        ),
    )
    conn.execute(
        "UPDATE episodes SET completed_at = ?, outcome = ?, notes = ?, reward = ?, "
        "reward_detail = ?, memory_id = ? WHERE id = ?",
        (now, req.outcome, notes, r.value, _json.encode(r).decode(), memory_id, ep.id),
    )
    return get(conn, ep.id)


# -- reading (readers) -----------------------------------------------------------------


def get(conn: apsw.Connection, episode_id: int) -> Episode:
    ep = _summary_row(conn, episode_id)
    detail, memory_id = conn.execute(
        "SELECT reward_detail, memory_id FROM episodes WHERE id = ?", (episode_id,)
    ).fetchone()  # type: ignore[misc]
    fields = {f: getattr(ep, f) for f in EpisodeSummary.__struct_fields__}
    return Episode(
        **fields,
        reward_detail=None if detail is None else msgspec.json.decode(detail, type=Reward),
        memory_id=memory_id,
        steps=_steps(conn, episode_id),
    )


def list_episodes(conn: apsw.Connection, req: ListEpisodes) -> EpisodeList:
    where: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("workspace", req.workspace),
        ("outcome", req.outcome),
        ("task_type", req.task_type),
        ("session_id", req.session_id),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if req.status == "open":
        where.append("outcome IS NULL")
    elif req.status == "completed":
        where.append("outcome IS NOT NULL")
    if req.before_id is not None:
        where.append("id < ?")
        args.append(req.before_id)
    sql = f"SELECT {_SUMMARY} FROM episodes"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(f"{sql} ORDER BY id DESC LIMIT ?", (*args, req.limit + 1)).fetchall()
    page = [_summary(r) for r in rows[: req.limit]]
    more = len(rows) > req.limit
    return EpisodeList(episodes=page, next_before_id=page[-1].id if more else None)


# -- similar episodes --------------------------------------------------------------------


def context_overlap(
    query: EpisodeContext, task_type: str | None, ep: EpisodeSummary
) -> float | None:
    """The share of what the query names that the episode matches; None if it names nothing.

    Language, framework, domain and task type count 1 each when equal
    (case-insensitive); tags count as the share of the query's tags the
    episode carries.
    """
    parts: list[float] = []
    for want, have in (
        (query.language, ep.context.language),
        (query.framework, ep.context.framework),
        (query.domain, ep.context.domain),
        (task_type or "", ep.task_type),
    ):
        if want:
            parts.append(float(want.casefold() == have.casefold()))
    if query.tags:
        have_tags = {t.casefold() for t in ep.context.tags}
        wanted = {t.casefold() for t in query.tags}
        parts.append(len(wanted & have_tags) / len(wanted))
    return sum(parts) / len(parts) if parts else None


def rank_score(relevance: float, reward_value: float, overlap: float | None) -> float:
    """relevance x (0.5 + 0.5 reward) x (0.7 + 0.3 overlap); the overlap factor is 1 without one.

    Relevance gates: the factors only multiply it, so an episode unrelated to
    the task never climbs on its reward alone. Reward costs at most half: a
    failure on the same task stays in the list, below the success, because
    knowing what did not work is still worth reading (`outcomes` filters it
    out). Context costs at most 30%: the same task on another stack is still
    a useful precedent, but among equally relevant ones the matching stack
    wins.
    """
    reward_factor = (1 - REWARD_WEIGHT) + REWARD_WEIGHT * reward_value
    context_factor = 1.0 if overlap is None else (1 - CONTEXT_WEIGHT) + CONTEXT_WEIGHT * overlap
    return relevance * reward_factor * context_factor


def _query(req: SimilarEpisodes) -> str:
    # The description only: the context counts once, through `context_overlap`.
    # In the query too, it would let an unrelated task on the same stack
    # outrank the same task on another one.
    return req.description[:SEARCH_QUERY_MAX]


def _lessons(conn: apsw.Connection, episode_id: int) -> tuple[list[str], list[str]]:
    """What worked (successful steps, deduplicated) and what failed, in step order."""
    worked: dict[str, None] = {}
    failed: dict[str, None] = {}
    for step in _steps(conn, episode_id):
        what = _one_line(f"{step.tool}: {step.action}" if step.action else step.tool)
        if step.success and len(worked) < WORKED_MAX:
            worked[what] = None
        elif not step.success and len(failed) < FAILED_MAX:
            failed[_one_line(f"{what}: {step.error}") if step.error else what] = None
    return list(worked), list(failed)


def similar(
    conn: apsw.Connection,
    req: SimilarEpisodes,
    *,
    cfg: SearchConfig,
    indexer: Indexer | None,
) -> tuple[SimilarEpisodesResult, list[tuple[int, float]]]:
    """Completed episodes like the task in `req`, best first; and the memories recalled.

    Candidates come from the ordinary hybrid search over `episode` memories
    (workspace optional; the archived tier included, since archiving an old
    lesson should not make it unfindable). Relevance is the fused score
    before neighbour context (episodes are independent units, not turns of a
    conversation, so a memory written next to a match earns nothing), scaled
    by the best candidate's. The final order is `rank_score`.
    """
    want = min(1000, max(50, 10 * req.limit))
    search = Search(
        query=_query(req),
        workspace=req.workspace,
        limit=want,
        kinds=[MEMORY_KIND],
        include_archived=True,
        explain=True,
    )
    found = hybrid.run(conn, search, cfg=cfg, indexer=indexer)
    fused = {h.memory.id: h.explain.fused for h in found.hits if h.explain and h.explain.fused > 0}
    if not fused:
        return SimilarEpisodesResult(matches=[], mode=found.mode, notes=found.notes), []
    marks = ",".join("?" * len(fused))
    rows = conn.execute(
        f"SELECT {_SUMMARY}, memory_id FROM episodes WHERE memory_id IN ({marks})", tuple(fused)
    ).fetchall()
    top = max(fused.values())
    scored: list[tuple[float, float, float | None, EpisodeSummary, int]] = []
    for row in rows:
        ep, memory_id = _summary(row[:-1]), int(row[-1])  # type: ignore[arg-type]
        if ep.outcome is None or (req.outcomes and ep.outcome not in req.outcomes):
            continue
        relevance = fused[memory_id] / top
        overlap = context_overlap(req.context, req.task_type, ep)
        score = rank_score(relevance, ep.reward or 0.0, overlap)
        scored.append((score, relevance, overlap, ep, memory_id))
    scored.sort(key=lambda s: (-s[0], -s[3].id))
    matches: list[SimilarEpisode] = []
    recalled: list[tuple[int, float]] = []
    for score, relevance, overlap, ep, memory_id in scored[: req.limit]:
        worked, failed = _lessons(conn, ep.id)
        matches.append(
            SimilarEpisode(
                episode=ep,
                score=round(score, 6),
                relevance=round(relevance, 6),
                context_overlap=None if overlap is None else round(overlap, 6),
                worked=worked,
                failed=failed,
            )
        )
        recalled.append((memory_id, round(score, 6)))
    result = SimilarEpisodesResult(matches=matches, mode=found.mode, notes=found.notes)
    return result, recalled


# -- the daemon's entry point ------------------------------------------------------------


async def serve(
    db: Database,
    req: EpisodeRequest,
    *,
    search: SearchConfig,
    indexer: Indexer | None,
    written: Callable[[], None],
) -> EpisodeResult:
    """Run one episode request: writes through the group-committing writer, reads on a reader."""
    match req:
        case StartEpisode() as start_req:
            return await db.writer.run(lambda c: start(c, start_req), single=True)
        case LogStep() as step_req:
            return await db.writer.run(lambda c: log_step(c, step_req))
        case CompleteEpisode() as end_req:
            done = await db.writer.run(lambda c: complete(c, end_req))
            written()  # a new `episode` memory for the vector index
            return done
        case GetEpisode(episode_id=eid):
            return await db.read(lambda c: get(c, eid))
        case ListEpisodes() as list_req:
            return await db.read(lambda c: list_episodes(c, list_req))
        case SimilarEpisodes() as like_req:
            result, recalled = await db.read(
                lambda c: similar(c, like_req, cfg=search, indexer=indexer)
            )
            if search.record_recalls:
                db.record_recalls(_query(like_req), recalled)
            return result
