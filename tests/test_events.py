"""The event log: idempotent batches, observations, trimming, privacy, capture, sessions.

Through the real client against a real daemon, plus the pure functions that
turn a payload into an observation and trim it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import msgspec
import pytest
import trio
import trio.testing
from harness import Daemon, wait_indexed
from reverie.daemon.config import IndexConfig
from reverie.errors import InvalidParams
from reverie.rpc.client import Client
from reverie.rpc.proto_events import (
    Capture,
    CaptureResult,
    Event,
    ListEvents,
    ListEventsResult,
    PostEvents,
    PostEventsResult,
)
from reverie.rpc.workspace import workspace_for
from reverie.store.database import Database
from reverie.store.embed_lexical import LexicalEmbedder
from reverie.store.indexer import BURST_FACTOR, BURST_RATE, Indexer
from reverie.store.observations import PAYLOAD_MAX_BYTES, observe, trim_payload, trim_text

# Built at run time so that no well-formed key sits in the repository.
AWS_KEY = "AKIA" + "QX7RT2ZK5MWP3JHN"
WS = "git:example.com/team/shop"
SESSION = "0b9e6c8e-5f7e-4c53-9d7a-3f1b2a7c9e11"


def ev(key: str, type_: str, payload: dict[str, Any], **kw: Any) -> Event:
    fields: dict[str, Any] = {"harness": "claude-code", "workspace": WS, "session_id": SESSION}
    fields.update(kw)
    return Event(key=key, type=type_, payload=payload, **fields)


def post(c: Client, *events: Event) -> PostEventsResult:
    result: PostEventsResult = c.call(PostEvents(events=list(events)))
    return result


def log(c: Client, **filters: Any) -> ListEventsResult:
    result: ListEventsResult = c.call(ListEvents(**filters))
    return result


def bash(key: str, command: str, stdout: str, **kw: Any) -> Event:
    return ev(
        key,
        "PostToolUse",
        {
            "hook_event_name": "PostToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": command, "description": "Run it"},
            "tool_response": {"stdout": stdout, "stderr": "", "interrupted": False},
        },
        **kw,
    )


def _db_text(d: Daemon, sql: str) -> str:
    conn = apsw.Connection(str(d.data_dir / "reverie.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return json.dumps(conn.execute(sql).fetchall())
    finally:
        conn.close()


# -- idempotency --------------------------------------------------------------------------


def test_a_key_is_stored_once_across_retries_and_within_a_batch(daemon: Daemon) -> None:
    batch = [
        ev("k1", "UserPromptSubmit", {"prompt": "why does checkout fail twice"}),
        ev("k2", "PreToolUse", {"tool_name": "Bash", "tool_input": {"command": "ls"}}),
        ev("k3", "SessionStart", {"source": "startup"}),
    ]
    with daemon.client() as c:
        first = post(c, *batch)
        assert (first.stored, first.duplicates, first.dropped) == (3, 0, 0)
        assert first.observations == 1  # only the prompt carries content
        retry = post(c, *batch)  # a retried batch (the answer was lost)
        assert (retry.stored, retry.duplicates, retry.observations) == (0, 3, 0)
        # The same key twice in one batch: the first is kept.
        twice = post(c, ev("k4", "Notification", {"message": "first"}), ev("k4", "x", {}))
        assert (twice.stored, twice.duplicates) == (1, 1)
        events = log(c).events
        assert sorted(e.key for e in events) == ["k1", "k2", "k3", "k4"]
        k4 = next(e for e in events if e.key == "k4")
        assert k4.type == "Notification" and k4.payload == {"message": "first"}
    assert json.loads(_db_text(daemon, "SELECT count(*) FROM events")) == [[4]]


# -- observations --------------------------------------------------------------------------


def test_new_events_are_searchable_at_once(daemon: Daemon) -> None:
    at = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    with daemon.client() as c:
        res = post(
            c,
            ev("p1", "UserPromptSubmit", {"prompt": "How do we rotate the staging database?"}),
            bash("t1", "npm test -- cart", "12 passed\n3 failed: coupon applied twice", at=at),
            ev("t0", "PreToolUse", {"tool_name": "Bash", "tool_input": {"command": "npm test"}}),
            ev("s1", "Stop", {"last_assistant_message": "Rotation runs in tools/rotate.sh"}),
        )
        assert res.observations == 3
        hit = c.search("rotate staging database", workspace=WS).hits[0].memory
        assert hit.content == "User: How do we rotate the staging database?"
        assert hit.kind == "observation" and hit.tier == "short"
        assert "event:UserPromptSubmit" in hit.tags
        tool = c.search("coupon applied twice", workspace=WS, tags=["tool:Bash"]).hits
        assert len(tool) == 1
        m = tool[0].memory
        assert (
            m.content.startswith("Bash: npm test -- cart (Run it) → ") and "3 failed" in m.content
        )
        assert m.observed_at == at  # when it happened, not when it arrived
        event = next(e for e in log(c).events if e.key == "t1")
        assert m.metadata == {
            "harness": "claude-code",
            "event": "PostToolUse",
            "event_id": event.id,
            "session_id": SESSION,
        }
        assert m.provenance == {"events": [event.id]}
        assert (
            c.search("tools/rotate.sh", workspace=WS)
            .hits[0]
            .memory.content.startswith("Assistant: ")
        )


def test_noise_is_not_stored_twice(daemon: Daemon) -> None:
    with daemon.client() as c:
        a = post(c, bash("a1", "git status", "nothing to commit"))
        b = post(c, bash("a2", "git status", "nothing  to commit"), bash("a3", "git status", "x"))
        other = post(c, bash("a4", "git status", "nothing to commit", workspace="path:/other"))
        assert (a.observations, b.observations, other.observations) == (1, 1, 1)
        assert b.stored == 2  # both events are in the log; only the text is deduplicated
        hits = c.search("git status nothing to commit", workspace=WS).hits
        assert [h.memory.content for h in hits].count(
            "Bash: git status (Run it) → nothing to commit"
        ) == 1


def test_huge_payloads_are_trimmed_with_a_marker_never_refused(daemon: Daemon) -> None:
    big = "line of build output\n" * 60_000  # 1.2 MB
    with daemon.client() as c:
        res = post(c, bash("big", "make all", big + "BUILD FAILED at step 9"))
        assert res.stored == 1 and res.observations == 1
        stored = log(c).events[0]
        text = json.dumps(stored.payload)
        assert len(text.encode()) <= PAYLOAD_MAX_BYTES
        assert "…[trimmed " in stored.payload["tool_response"]["stdout"]
        # The observation keeps the end of the output, where it concludes.
        m = c.search("BUILD FAILED", workspace=WS).hits[0].memory
        assert m.content.endswith("BUILD FAILED at step 9") and len(m.content) < 400


def test_secrets_and_private_spans_never_reach_the_log_or_the_memories(daemon: Daemon) -> None:
    prompt = (
        f"deploy with AWS_ACCESS_KEY_ID={AWS_KEY} please "
        "<private>my home address is 12 Elm St</private> then run the smoke tests"
    )
    with daemon.client() as c:
        res = post(
            c,
            ev("sec1", "UserPromptSubmit", {"prompt": prompt}),
            bash("sec2", f"aws s3 ls --key {AWS_KEY}", f"using {AWS_KEY}"),
        )
        assert res.observations == 2
        listed = json.dumps([msgspec.to_builtins(e) for e in log(c).events])
        assert AWS_KEY not in listed and "12 Elm St" not in listed
        assert "[REDACTED:" in listed
        hit = c.search("smoke tests", workspace=WS).hits[0].memory
        assert AWS_KEY not in hit.content and "Elm" not in hit.content
        assert hit.content.endswith("then run the smoke tests")
        assert c.search(AWS_KEY, mode="lexical").hits == []
    raw = _db_text(daemon, "SELECT payload FROM events") + _db_text(
        daemon, "SELECT content, metadata, tags FROM memories"
    )
    assert AWS_KEY not in raw and "12 Elm St" not in raw


def test_an_all_private_prompt_is_logged_but_makes_no_memory(daemon: Daemon) -> None:
    with daemon.client() as c:
        res = post(c, ev("priv", "UserPromptSubmit", {"prompt": "<private>nothing</private>"}))
        assert (res.stored, res.observations) == (1, 0)
        assert log(c).events[0].payload == {"prompt": "[REDACTED:private]"}


# -- capture off --------------------------------------------------------------------------------


def test_capture_off_drops_a_workspaces_events(daemon: Daemon) -> None:
    with daemon.client() as c:
        state: CaptureResult = c.call(Capture(workspace=WS))
        assert state.workspaces[0].enabled and state.workspaces[0].updated_at is None
        c.call(Capture(workspace=WS, enabled=False))
        res = post(
            c,
            ev("off1", "UserPromptSubmit", {"prompt": "not to be kept"}),
            ev("on1", "UserPromptSubmit", {"prompt": "kept elsewhere"}, workspace="path:/b"),
        )
        assert (res.stored, res.dropped, res.observations) == (1, 1, 1)
        assert [e.key for e in log(c).events] == ["on1"]
        found = c.search("not to be kept", mode="lexical").hits
        assert [h.memory.content for h in found] == ["User: kept elsewhere"]
        listed: CaptureResult = c.call(Capture())
        assert [(s.workspace, s.enabled) for s in listed.workspaces] == [(WS, False)]
        c.call(Capture(workspace=WS, enabled=True))
        # Dropped means never stored: the same key posted again is new.
        assert post(c, ev("off1", "UserPromptSubmit", {"prompt": "now kept"})).stored == 1
        with pytest.raises(InvalidParams):
            c.call(Capture(enabled=False))


def _cli(d: Daemon, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reverie", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=d.environ(),
        cwd=cwd,
    )


def test_capture_cli_defaults_to_the_current_directorys_workspace(
    daemon: Daemon, tmp_path: Path
) -> None:
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True, timeout=30)
    wid = workspace_for(project).id  # the repository's, from any folder in it
    assert wid == workspace_for(project / "src").id
    off = _cli(daemon, "capture", "off", "--json", cwd=project / "src")
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["workspaces"][0] == {
        "workspace": wid,
        "enabled": False,
        "updated_at": json.loads(off.stdout)["workspaces"][0]["updated_at"],
    }
    status = _cli(daemon, "capture", "status", "--workspace", str(project))
    assert status.returncode == 0 and f"capture off  {wid}" in status.stdout
    with daemon.client() as c:
        assert post(c, ev("cli1", "UserPromptSubmit", {"prompt": "x"}, workspace=wid)).dropped == 1
    every = _cli(daemon, "capture", "status", "--all")
    assert wid in every.stdout
    assert _cli(daemon, "capture", "on", "--workspace", wid).returncode == 0
    with daemon.client() as c:
        assert post(c, ev("cli1", "UserPromptSubmit", {"prompt": "x"}, workspace=wid)).stored == 1


# -- sessions -----------------------------------------------------------------------------------


def test_events_keep_the_sessions_row_current(daemon: Daemon) -> None:
    t0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    t1 = t0 + dt.timedelta(minutes=5)
    t2 = t0 + dt.timedelta(minutes=9)
    sql = "SELECT id, workspace, harness, started_at, last_seen_at, ended_at, status FROM sessions"
    with daemon.client() as c:
        post(c, ev("s-a", "SessionStart", {"source": "startup"}, at=t0))
        post(c, ev("s-b", "UserPromptSubmit", {"prompt": "hello"}, at=t1))
        rows = json.loads(_db_text(daemon, sql))
        assert rows == [
            [SESSION, WS, "claude-code", t0.timestamp(), t1.timestamp(), None, "active"]
        ]
        post(c, ev("s-c", "SessionEnd", {"reason": "prompt_input_exit"}, at=t2))
        rows = json.loads(_db_text(daemon, sql))
        assert rows == [
            [
                SESSION,
                WS,
                "claude-code",
                t0.timestamp(),
                t2.timestamp(),
                t2.timestamp(),
                "completed",
            ]
        ]
        # A late (spooled) event from earlier does not move last_seen back or reopen it.
        post(c, ev("s-d", "Notification", {"message": "late"}, at=t1))
        assert json.loads(_db_text(daemon, sql))[0][4:] == [
            t2.timestamp(),
            t2.timestamp(),
            "completed",
        ]
        # Resumed after it ended: active again.
        post(c, ev("s-e", "SessionStart", {"source": "resume"}, at=t2 + dt.timedelta(hours=1)))
        assert json.loads(_db_text(daemon, sql))[0][5:] == [None, "active"]
        # Events without a session touch no session.
        post(c, ev("s-f", "note", {"text": "no session"}, session_id=None))
        assert len(json.loads(_db_text(daemon, sql))) == 1


# -- the event log's commands ----------------------------------------------------------------------


def test_post_events_and_events_commands(daemon: Daemon, tmp_path: Path) -> None:
    lines = [
        ev(f"f{i}", "UserPromptSubmit", {"prompt": f"file prompt number {i}"}) for i in range(3)
    ] + [ev("g1", "note", {"text": "a generic harness note"}, harness="generic")]
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in lines))
    out = _cli(daemon, "post-events", str(f), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"stored": 4, "duplicates": 0, "observations": 4, "dropped": 0}
    again = _cli(daemon, "post-events", str(f))
    assert again.returncode == 0 and "4 already stored" in again.stdout
    listed = _cli(daemon, "events", "--harness", "generic", "--json")
    events = json.loads(listed.stdout)["events"]
    assert [e["key"] for e in events] == ["g1"]
    text = _cli(daemon, "events", "--type", "UserPromptSubmit", "--limit", "2")
    assert text.returncode == 0
    assert "file prompt number 2" in text.stdout and "number 0" not in text.stdout
    assert "--before" in text.stderr  # says how to see older ones
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "x"}\n')
    refused = _cli(daemon, "post-events", str(bad))
    assert refused.returncode == 2 and "bad.jsonl:1" in refused.stderr


def test_listing_pages_and_filters(daemon: Daemon) -> None:
    with daemon.client() as c:
        post(c, *[ev(f"l{i}", "PreToolUse", {"n": i}) for i in range(7)])
        post(c, ev("other", "PreToolUse", {}, session_id="s2", workspace="path:/x"))
        first = log(c, limit=3, session_id=SESSION)
        assert [e.key for e in first.events] == ["l6", "l5", "l4"]
        assert first.next_before_id is not None
        rest = log(c, limit=10, session_id=SESSION, before_id=first.next_before_id)
        assert [e.key for e in rest.events] == ["l3", "l2", "l1", "l0"]
        assert rest.next_before_id is None
        assert [e.key for e in log(c, workspace="path:/x").events] == ["other"]


# -- pure functions: trimming and observations ----------------------------------------------------


def test_trim_payload_fits_and_says_what_it_cut() -> None:
    small = {"a": "b"}
    assert trim_payload(small) is small
    shapes: list[dict[str, Any]] = [
        {"s": "x" * 200_000},
        {"many": ["word " * 50] * 5000},
        {"ints": list(range(100_000))},
        {f"k{i}": i for i in range(50_000)},
        {"mix": {"a": "y" * 90_000, "b": ["z" * 1000] * 300}},
    ]
    for payload in shapes:
        out = trim_payload(payload, 16_384)
        assert len(msgspec.json.encode(out)) <= 16_384
        assert "…[trimmed " in json.dumps(out, ensure_ascii=False)
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(3000):
        node["k"] = {}
        node = node["k"]
    assert "trimmed" in trim_payload(deep, 16_384)


def test_trim_text_does_not_split_a_token() -> None:
    text = "deploy key " + "A" * 40 + " done"
    cut = trim_text(text, 30)
    assert cut.startswith("deploy key …[trimmed ") and "A" not in cut
    assert trim_text("B" * 1000, 100).startswith("B" * 100 + "…[trimmed 900 chars]")


@pytest.mark.parametrize(
    ("type_", "payload", "text"),
    [
        ("UserPromptSubmit", {"prompt": "  hi there "}, "User: hi there"),
        (
            "PostToolUse",
            {
                "tool_name": "Read",
                "tool_input": {"file_path": "/src/a.py"},
                "tool_response": {"file": {"content": "print()"}},
            },
            "Read: /src/a.py",
        ),
        (
            "PostToolUse",
            {
                "tool_name": "Grep",
                "tool_input": {"pattern": "def main", "path": "src"},
                "tool_response": {"numFiles": 3},
            },
            "Grep: def main (src) → 3 files",
        ),
        (
            "PostToolUse",
            {
                "tool_name": "Edit",
                "tool_input": {
                    "file_path": "/a.py",
                    "old_string": "x",
                    "new_string": "retries = 5",
                },
            },
            "Edit: /a.py → retries = 5",
        ),
        (
            "PostToolUse",
            {"tool_name": "WebFetch", "tool_input": {"url": "https://x.org", "prompt": "summary"}},
            "WebFetch: https://x.org (summary)",
        ),
        (
            "PostToolUse",
            {
                "tool_name": "mcp__db__query",
                "tool_input": {"sql": "select 1"},
                "tool_response": [{"type": "text", "text": "1 row"}],
            },
            'mcp__db__query: {"sql":"select 1"} → 1 row',
        ),
        (
            "PostToolUseFailure",
            {"tool_name": "Bash", "tool_input": {"command": "make"}, "error": "exit 2"},
            "Bash failed: make → exit 2",
        ),
        ("Stop", {"last_assistant_message": "All green."}, "Assistant: All green."),
        (
            "SubagentStop",
            {"agent_type": "Explore", "last_assistant_message": "Found it"},
            "Subagent (Explore): Found it",
        ),
        ("PostCompact", {"compact_summary": "We fixed X"}, "Compaction summary: We fixed X"),
        (
            "PreCompact",
            {"trigger": "manual", "custom_instructions": "keep the API notes"},
            "Compaction instructions: keep the API notes",
        ),
        ("SessionEnd", {"reason": "logout"}, "Session ended: logout"),
        ("Notification", {"message": "Needs permission"}, "Notification: Needs permission"),
        ("deploy", {"text": "shipped v2"}, "deploy: shipped v2"),
        ("PreToolUse", {"tool_name": "Bash", "tool_input": {"command": "ls"}}, None),
        ("SessionStart", {"source": "startup"}, None),
        ("SubagentStart", {"agent_type": "Explore"}, None),
        ("Stop", {"stop_hook_active": False}, None),
        ("whatever", {"n": 1}, None),
    ],
)
def test_observation_text(type_: str, payload: dict[str, Any], text: str | None) -> None:
    obs = observe(type_, payload)
    assert (obs.text if obs else None) == text
    if obs is not None:
        assert obs.tags[0] == f"event:{type_}" and 0 <= obs.importance <= 1


def test_the_observation_hash_is_memories_content_hash() -> None:
    from reverie.store.events import observation_hash
    from reverie.store.memories import content_hash

    for text in [
        "plain words",
        "  lead and trail  ",
        "tabs\tand\nnewlines\r\n and  runs",
        "unicode\u00a0nbsp\u2003em\u3000ideographic\u2028line\x1cfs\x85nel",
        "",
        "→ arrows → ok",
    ]:
        assert observation_hash(text) == content_hash(text), repr(text)


def test_each_observation_names_its_own_event_and_uids_are_time_ordered(tmp_path: Path) -> None:
    """store() links each memory to its event's id: with every key new (ids known
    without asking), and with keys already stored or repeated in the batch (asked)."""
    from reverie.store import events as store_events
    from reverie.store.connection import open_connection
    from reverie.store.schema import migrate

    conn = open_connection(tmp_path / "e.db")
    migrate(conn)

    def run(batch: list[Event], now: float) -> PostEventsResult:
        prepared = store_events.prepare(batch, now)
        with conn:
            return store_events.store(conn, prepared, now)

    first = [bash(f"a{n}", f"make t{n}", f"{n} passed") for n in range(300)]
    assert run(first, 1_800_000_000.0).observations == 300
    # Stored keys and one repeated in the batch: some rows go in, some do not.
    mixed = [bash(f"b{n}", f"make u{n}", f"{n} ok") for n in range(5)]
    mixed += [first[7], bash("b2", "make again", "again"), bash("b9", "make v", "v")]
    res = run(mixed, 1_800_000_001.0)
    assert (res.stored, res.duplicates, res.observations) == (6, 2, 6)
    rows = conn.execute(
        "SELECT m.uid, m.content, m.metadata, m.provenance, e.id, e.idem_key "
        "FROM memories m JOIN events e ON e.id = json_extract(m.metadata, '$.event_id') "
        "ORDER BY m.id"
    ).fetchall()
    assert len(rows) == 306
    command = {e.key: e.payload["tool_input"]["command"] for e in first + mixed[:5]}
    command["b9"] = "make v"
    for uid, content, meta, prov, event_id, key in rows:
        assert content.startswith(f"Bash: {command[key]} ")
        assert json.loads(prov) == {"events": [event_id]}
        assert json.loads(meta)["event_id"] == event_id
        assert len(uid) == 32 and int(uid, 16) >= 0
    uids = [r[0] for r in rows]
    assert len(set(uids)) == len(uids)
    assert {u[:12] for u in uids[:300]} == {f"{1_800_000_000_000:012x}"}  # milliseconds first
    assert {u[:12] for u in uids[300:]} == {f"{1_800_000_001_000:012x}"}
    conn.close()


def test_payload_redaction_is_exactly_redact_obj_on_the_secret_corpus() -> None:
    """The envelope memo changes the cost of redaction, never its result."""
    from reverie.store.events import prepare, redact_payload
    from reverie.store.redaction_objects import redact_obj
    from test_redaction import SECRET_CASES, leaks

    events, cases = [], []
    for n, case in enumerate(SECRET_CASES):
        payload = {
            "session_id": "s-1",
            "cwd": case.text if n % 3 == 0 else "/home/u/src",
            "transcript_path": "/home/u/.claude/t.jsonl",
            "hook_event_name": "PostToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": case.text, "description": "run"},
            "tool_response": {"stdout": f"out: {case.text}", "stderr": ""},
        }
        assert redact_payload(payload) == redact_obj(payload), case.id
        events += [
            ev(f"c{n}", "PostToolUse", payload),
            ev(f"p{n}", "UserPromptSubmit", {"prompt": case.text}),
        ]
        cases += [case, case]
    for p, case in zip(prepare(events, 0.0), cases, strict=True):
        stored = "\n".join(_strings(json.loads(p.payload)))
        stored += p.observation.text if p.observation else ""
        for secret in case.must_remove:
            assert not leaks(secret, stored), (case.id, p.event.key)


def test_strings_shared_across_a_batch_are_redacted_in_every_payload() -> None:
    """A string scanned once for the batch (its first payload) is redacted in all."""
    from reverie.store.redaction import redact
    from reverie.store.redaction_objects import redact_obj, redact_objs_deriving
    from test_redaction import SECRET_CASES

    texts = [c.text for c in SECRET_CASES[:40]] + ["plain words", "ls -la", "npm test"]
    payloads: list[Any] = []
    for n in range(3 * len(texts)):
        a, b = texts[n % len(texts)], texts[(n * 7 + 3) % len(texts)]
        payloads.append({"command": a, "out": {"stdout": b, "list": [a, "ok"]}, b[:20]: n})
        payloads.append({"prompt": b})  # the same strings, later, in another shape

    def derive(_: int, obj: Any) -> str:
        return json.dumps(obj, sort_keys=True)

    got = redact_objs_deriving(payloads, derive)
    for i, (obj, (out, text)) in enumerate(zip(payloads, got, strict=True)):
        want = redact_obj(obj)
        assert out == want, i
        assert text == redact(derive(i, want)), i


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# -- the vector index during a burst of events ---------------------------------------------


def _quiet_period_ends(tmp: Path, writes_at: list[float], memories: int = 1) -> float:
    """When the indexer's wait ends (MockClock seconds), given writes at these times.

    A first write wakes the indexer at 0.0; each of the others notifies it of
    `memories` new memories, as rpc/dispatch.py does after a write.
    """
    clock = trio.testing.MockClock(autojump_threshold=0)
    db = Database.open_blocking(tmp)
    try:
        ix = Indexer(db, LexicalEmbedder(), tmp, IndexConfig(delay_s=0.25, max_lag_s=2.0))

        async def main() -> float:
            ix.notify(memories)
            async with trio.open_nursery() as nursery:

                async def writes() -> None:
                    for t in writes_at:
                        await trio.sleep_until(t)
                        ix.notify(memories)

                nursery.start_soon(writes)
                await ix._quiet_period()
                ended = trio.current_time()
                nursery.cancel_scope.cancel()
            return ended

        return trio.run(main, clock=clock)
    finally:
        db.close_blocking()


def test_the_index_catches_up_once_writes_pause(short_tmp: Path) -> None:
    assert _quiet_period_ends(short_tmp, []) == pytest.approx(0.25)
    # One large post: the pause it waits for is longer (it may start a burst).
    assert _quiet_period_ends(short_tmp, [], memories=5000) == pytest.approx(BURST_FACTOR * 0.25)
    # Writes every 0.1 s until 1.0: caught up 0.25 s after the last one.
    assert _quiet_period_ends(short_tmp, [i / 10 for i in range(1, 11)]) == pytest.approx(1.25)


def test_a_trickle_of_writes_waits_at_most_max_lag(short_tmp: Path) -> None:
    # 10 memories a second, never a pause of delay_s: max_lag_s bounds the lag.
    ends = _quiet_period_ends(short_tmp, [i / 5 for i in range(1, 100)], memories=2)
    assert ends == pytest.approx(2.0)
    # Half BURST_RATE is still a trickle.
    per_write = int(BURST_RATE / 10) // 2
    ends = _quiet_period_ends(short_tmp, [i / 10 for i in range(1, 100)], memories=per_write)
    assert ends == pytest.approx(2.0)


def test_a_burst_defers_the_index_to_its_end_within_a_bound(short_tmp: Path) -> None:
    # bench_ingest.py's rate, slowed 5x: 8 posts a second of 260 memories
    # each, for 4 s. The index waits for the pause after the burst (a pause
    # of BURST_FACTOR * delay_s: the burst's pace tells nothing of its end).
    burst = [i / 8 for i in range(1, 33)]
    assert _quiet_period_ends(short_tmp, burst, memories=260) == pytest.approx(
        4 + BURST_FACTOR * 0.25
    )
    # On a loaded machine the burst's batches come further apart than delay_s:
    # still a burst, not a pause.
    slow = [i * 0.4 for i in range(1, 11)]
    assert _quiet_period_ends(short_tmp, slow, memories=260) == pytest.approx(
        4 + BURST_FACTOR * 0.25
    )
    # A burst that does not stop: the lag is bounded (BURST_FACTOR * max_lag_s).
    endless = [i / 8 for i in range(1, 8 * 30)]
    assert _quiet_period_ends(short_tmp, endless, memories=260) == pytest.approx(BURST_FACTOR * 2.0)


def test_a_bursts_observations_are_searchable_at_once_and_by_vector_after(
    short_tmp: Path,
) -> None:
    with Daemon(short_tmp) as d, d.client() as c:
        for b in range(30):  # back to back: a burst
            post(
                c,
                *(
                    bash(f"b{b}-{i}", f"make target{b}x{i}", f"built artefact{b}x{i} fine")
                    for i in range(20)
                ),
            )
            # Lexically at once, whatever the index is doing.
            hit = c.search(f"artefact{b}x19", workspace=WS, mode="lexical").hits[0]
            assert f"artefact{b}x19" in hit.memory.content
        wait_indexed(c, timeout=60)
        assert c.status().index.pending == 0  # type: ignore[union-attr]
        found = c.search("make target29x7", workspace=WS, mode="vector").hits
        assert found and "target29x7" in found[0].memory.content
