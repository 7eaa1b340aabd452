"""The situation report: what a session needs to know about its workspace.

World state, active sessions (stale ones marked), held claims and recently
ended sessions with their summaries, as structured data and as markdown
within a character budget. The lines are shared with the briefing.
"""

from __future__ import annotations

import apsw
from reverie.rpc.proto_sessions import ClaimInfo, SessionInfo, SitrepResult, WorldState
from reverie.store import claims, sessions, world
from reverie.store.budget import Item, Section, fit
from reverie.store.sessions import Clock, age

MAX_ACTIVE = 50
SUMMARY_CHARS = 240  # of an ended session's summary, per line
DESCRIPTION_CHARS = 120


def flat(text: str, width: int) -> str:
    """One line of at most `width` characters."""
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def world_section(state: WorldState, clock: Clock, share: float) -> Section:
    items = [Item(state.content.strip(), cuttable=True)] if state.content.strip() else []
    by = f", by {flat(state.updated_by, 80)}" if state.updated_by else ""
    when = ""
    if state.updated_at is not None:
        when = f", updated {age(clock.now - state.updated_at.timestamp())} ago"
    return Section("world", f"## World state (v{state.version}{by}{when})", items, share)


def _ago(clock: Clock, when: float) -> str:
    return f"{age(clock.now - when)} ago"


def active_line(s: SessionInfo, clock: Clock) -> str:
    mark = "⚠ stale " if s.stale else ""
    harness = f"{s.harness}, " if s.harness else ""
    what = flat(s.description, DESCRIPTION_CHARS) or "(no description)"
    progress = f" — {flat(s.progress, DESCRIPTION_CHARS)}" if s.progress else ""
    seen = _ago(clock, s.last_seen_at.timestamp())
    return f"- {mark}`{s.id}` ({harness}seen {seen}): {what}{progress}"


def ended_line(s: SessionInfo, clock: Clock) -> str:
    when = _ago(clock, s.ended_at.timestamp()) if s.ended_at is not None else "?"
    harness = f", {s.harness}" if s.harness else ""
    text = flat(s.summary or "", SUMMARY_CHARS) or flat(s.description, DESCRIPTION_CHARS)
    status = "" if s.status == "completed" else f"{s.status}: "
    return f"- {when} `{s.id}`{harness}: {status}{text or '(no summary)'}"


def claim_line(c: ClaimInfo, clock: Clock) -> str:
    who = flat(c.session_description, 80)
    who = f" ({who})" if who else ""
    note = f" — {flat(c.note, 160)}" if c.note else ""
    since = _ago(clock, c.claimed_at.timestamp())
    return f"- `{c.resource}` held by `{c.session_id}`{who}, claimed {since}{note}"


def gather(
    conn: apsw.Connection, workspace: str, clock: Clock, *, budget: int, recent: int
) -> SitrepResult:
    state = world.get(conn, workspace)
    live = sessions.active(conn, workspace, clock, MAX_ACTIVE)
    held = claims.held(conn, workspace, clock)
    ended = sessions.recent(conn, workspace, clock, recent) if recent else []
    stale = sum(s.stale for s in live)
    title = f"## Active sessions ({len(live)}" + (f", {stale} stale)" if stale else ")")
    sections = [
        world_section(state, clock, 0.35),
        Section("active", title, [Item(active_line(s, clock)) for s in live], 0.25),
        Section("claims", "## Claims held", [Item(claim_line(c, clock)) for c in held], 0.15),
        Section("recent", "## Recently ended", [Item(ended_line(s, clock)) for s in ended], 0.2),
    ]
    head = f"# Sitrep: {flat(workspace, 200)}"
    fitted = fit(
        sections, budget, head=head, tail="_(trimmed: `reverie sitrep --budget N` for more)_"
    )
    text = fitted.text
    if not fitted.sections:
        empty = (
            "\n\nNothing here yet: no world state, sessions or claims. "
            "Describe the project with `reverie world set FILE`."
        )
        text = (text + empty)[:budget]
    return SitrepResult(
        workspace=workspace,
        world=state,
        active=live,
        claims=held,
        recent=ended,
        text=text,
        truncated=fitted.truncated,
        stale_after_s=clock.stale_after,
    )
