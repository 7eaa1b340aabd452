"""`reverie hook`: real hook processes, real payloads, a real daemon (or none).

Every run checks the two promises a hook makes to its agent: exit status 0,
and stdout either empty or one valid hook JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import Daemon
from reverie.rpc import hook, hook_wire, spool
from reverie.rpc.client import resolve_socket
from reverie.rpc.proto_events import ListEvents, StoredEvent
from reverie.rpc.protocol import (
    PROTOCOL_VERSION,
    Hit,
    Memory,
    Request,
    SearchResult,
)

SESSION = "5f2b3c4d-0000-4000-8000-00000000abcd"


# -- payloads in the shapes Claude Code documents -----------------------------------


def payloads(cwd: str, transcript: str = "/nonexistent/t.jsonl") -> list[dict[str, Any]]:
    base = {"session_id": SESSION, "cwd": cwd, "transcript_path": transcript}
    tool = {"tool_name": "Bash", "tool_input": {"command": "pytest -q", "description": "tests"}}
    return [
        {**base, "hook_event_name": "SessionStart", "source": "startup", "model": "claude-x"},
        {**base, "hook_event_name": "UserPromptSubmit", "prompt": "how do we deploy the app?"},
        {**base, "hook_event_name": "PreToolUse", **tool, "tool_use_id": "toolu_01"},
        {
            **base,
            "hook_event_name": "PostToolUse",
            **tool,
            "tool_use_id": "toolu_01",
            "tool_response": {"stdout": "12 passed", "stderr": "", "interrupted": False},
        },
        {
            **base,
            "hook_event_name": "PostToolUseFailure",
            **tool,
            "tool_use_id": "toolu_02",
            "error": "Command failed with exit code 1",
            "is_interrupt": False,
        },
        {
            **base,
            "hook_event_name": "Notification",
            "message": "Claude needs your permission to use Bash",
            "notification_type": "permission_prompt",
        },
        {
            **base,
            "hook_event_name": "Stop",
            "stop_hook_active": False,
            "last_assistant_message": "The deploy script is tools/deploy.sh.",
        },
        {**base, "hook_event_name": "SubagentStart", "agent_id": "a1", "agent_type": "Explore"},
        {
            **base,
            "hook_event_name": "SubagentStop",
            "agent_id": "a1",
            "agent_type": "Explore",
            "stop_hook_active": False,
            "agent_transcript_path": "/nonexistent/a1.jsonl",
            "last_assistant_message": "Found three call sites of deploy().",
        },
        {**base, "hook_event_name": "PreCompact", "trigger": "manual", "custom_instructions": ""},
        {**base, "hook_event_name": "PostCompact", "trigger": "auto"},
        {**base, "hook_event_name": "SessionEnd", "reason": "prompt_input_exit"},
    ]


# -- running the hook ------------------------------------------------------------------


class Hooks:
    """Runs `python -m reverie hook ...` with a private spool, state dir and log."""

    def __init__(self, root: Path, socket_path: Path) -> None:
        self.root = root
        self.spool = root / "spool"
        self.log = root / "hook.log"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("REVERIE_", "CLAUDE_"))
        }
        self.env.update(
            REVERIE_SOCKET=str(socket_path),
            REVERIE_SPOOL_DIR=str(self.spool),
            REVERIE_HOOK_LOG=str(self.log),
            XDG_STATE_HOME=str(root / "state"),
        )

    def run(
        self,
        stdin: bytes | dict[str, Any] | str,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[bytes]:
        data = (
            json.dumps(stdin).encode()
            if isinstance(stdin, dict)
            else stdin.encode()
            if isinstance(stdin, str)
            else stdin
        )
        out = subprocess.run(
            [sys.executable, "-m", "reverie", "hook", *(args or ("claude-code",))],
            input=data,
            capture_output=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
        )
        assert out.returncode == 0, out
        assert out.stderr == b"", out.stderr
        check_stdout(out.stdout)
        return out

    def context(self, payload: dict[str, Any], **env: str) -> str:
        out = self.run(payload, env=env).stdout
        if not out:
            return ""
        body = json.loads(out)["hookSpecificOutput"]
        assert body["hookEventName"] == payload["hook_event_name"]
        return str(body["additionalContext"])

    def spooled(self) -> list[Any]:
        files = spool.pending(self.spool) if self.spool.exists() else []
        return [e for f in files for e in spool.read(f).events]

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def check_stdout(stdout: bytes) -> None:
    """Nothing, or exactly one hook JSON object with additionalContext under the cap."""
    if not stdout.strip():
        assert stdout == b""
        return
    body = json.loads(stdout)
    assert set(body) == {"hookSpecificOutput"}
    spec = body["hookSpecificOutput"]
    assert set(spec) == {"hookEventName", "additionalContext"}
    assert spec["hookEventName"] in ("SessionStart", "UserPromptSubmit")
    assert 0 < len(spec["additionalContext"]) <= 10_000


@pytest.fixture
def hooks(daemon: Daemon) -> Hooks:
    return Hooks(daemon.root, daemon.socket)


@pytest.fixture
def project(short_tmp: Path) -> Path:
    """A git repository without a remote: its workspace is ``path:<top level>``."""
    p = short_tmp / "proj"
    p.mkdir()
    subprocess.run(["git", "init", "-q", str(p)], check=True)
    return p


def events(d: Daemon, **filters: Any) -> list[StoredEvent]:
    with d.client() as c:
        found: list[StoredEvent] = c.call(ListEvents(limit=1000, **filters)).events
        return found


def ws(path: Path) -> str:
    return f"path:{os.path.realpath(path)}"


# -- capture --------------------------------------------------------------------------


def test_every_event_is_posted_once_even_when_retried(
    daemon: Daemon, hooks: Hooks, project: Path
) -> None:
    sent = payloads(str(project))
    for p in sent:
        hooks.run(p)
    for p in sent:  # a retry of every hook stores nothing new
        hooks.run(p)
    stored = events(daemon, session_id=SESSION)
    assert sorted(e.type for e in stored) == sorted(p["hook_event_name"] for p in sent)
    assert {e.harness for e in stored} == {"claude-code"}
    assert {e.workspace for e in stored} == {ws(project)}
    post = next(e for e in stored if e.type == "PostToolUse")
    assert post.payload["tool_response"]["stdout"] == "12 passed"
    assert post.key.endswith(":PostToolUse:tool:toolu_01")
    assert hooks.spooled() == [] and hooks.log_text() == ""


def test_the_prompt_gets_relevant_memories(daemon: Daemon, hooks: Hooks, project: Path) -> None:
    with daemon.client() as c:
        deploy = c.remember("Deploy with tools/deploy.sh --prod after CI", workspace=ws(project))
        c.remember("The office coffee machine is broken", workspace=ws(project))
        elsewhere = c.remember("Deploy the other app with kubectl apply", workspace="other")
    prompt = {
        "session_id": SESSION,
        "cwd": str(project / "src"),  # a subdirectory: the same workspace
        "hook_event_name": "UserPromptSubmit",
        "prompt": "How do I deploy this to production?",
    }
    (project / "src").mkdir()
    for _ in range(2):  # the second time, the first prompt is itself a memory
        text = hooks.context(prompt)
        assert f"#{deploy.id} " in text and "tools/deploy.sh" in text
        assert f"#{elsewhere.id} " not in text and "coffee" not in text
        assert "How do I deploy this to production?" not in text
        assert len(text) <= 1500
    assert hooks.context({**prompt, "prompt": "ok"}) == ""  # too short to search
    assert hooks.context({**prompt, "prompt": "/compact now please"}) == ""
    tight = hooks.context(prompt, REVERIE_RECALL_BUDGET="300")
    assert 0 < len(tight) <= 300


def test_session_start_gets_the_briefing_within_budget(
    daemon: Daemon, hooks: Hooks, project: Path
) -> None:
    with daemon.client() as c:
        ids = [
            c.remember(
                f"Decision {i}: the service uses trio, msgspec and APSW; " + "detail " * 40,
                workspace=ws(project),
                kind="decision",
                importance=0.9,
            ).id
            for i in range(40)
        ]
    start = {
        "session_id": SESSION,
        "cwd": str(project),
        "hook_event_name": "SessionStart",
        "source": "startup",
    }
    text = hooks.context(start)
    assert 0 < len(text) <= 4000
    assert any(f"#{i}" in text for i in ids)
    small = hooks.context(start, REVERIE_BRIEF_BUDGET="500")
    assert 0 < len(small) <= 500
    assert hooks.context({**start, "source": "resume"}) == ""  # already in the conversation
    assert hooks.context({**start, "source": "clear"}) != ""


def test_capture_off_posts_and_spools_nothing(daemon: Daemon, hooks: Hooks, project: Path) -> None:
    with daemon.client() as c:
        c.remember("Run the linters with make lint", workspace=ws(project))
    for value in ("off", "0", "false", "NO"):
        for p in payloads(str(project)):
            hooks.run(p, env={"REVERIE_CAPTURE": value})
        hooks.run({"x": 1}, "generic", "--event", "e", env={"REVERIE_CAPTURE": value})
        hooks.run(b"not json", env={"REVERIE_CAPTURE": value})
        prompt = {**payloads(str(project))[1], "prompt": "how do I run the linters?"}
        assert "make lint" in hooks.context(prompt, REVERIE_CAPTURE=value)  # still read
    assert events(daemon) == [] and hooks.spooled() == []


def test_stop_without_the_message_reads_it_from_the_transcript(
    daemon: Daemon, hooks: Hooks, project: Path
) -> None:
    transcript = project / "t.jsonl"
    lines = [
        {"type": "user", "message": {"role": "user", "content": "where is deploy?"}},
        {
            "type": "assistant",
            "message": {
                "role": "assistant",
                "content": [{"type": "text", "text": "Earlier answer."}],
            },
        },
        {
            "type": "assistant",
            "message": {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t", "name": "Bash", "input": {}},
                    {"type": "text", "text": "It lives in tools/deploy.sh."},
                ],
            },
        },
        {"type": "system", "content": "x"},
        {
            "type": "user",
            "isCompactSummary": True,
            "message": {"role": "user", "content": "Summary: we moved deploy to tools/."},
        },
    ]
    transcript.write_text("garbage line\n" + "\n".join(json.dumps(x) for x in lines) + "\n")
    base = {"session_id": SESSION, "cwd": str(project), "transcript_path": str(transcript)}
    hooks.run({**base, "hook_event_name": "Stop", "stop_hook_active": False})
    hooks.run({**base, "hook_event_name": "PostCompact", "trigger": "manual"})
    stop = events(daemon, type="Stop")[0].payload
    assert stop["last_assistant_message"] == "It lives in tools/deploy.sh."
    compact = events(daemon, type="PostCompact")[0].payload
    assert compact["compact_summary"] == "Summary: we moved deploy to tools/."
    with daemon.client() as c:
        found = c.search("deploy", workspace=ws(project)).hits
    assert any("It lives in tools/deploy.sh." in h.memory.content for h in found)


# -- never lose, never block ------------------------------------------------------------


def test_daemon_down_spools_and_the_daemon_drains_it_on_start(
    short_tmp: Path, project: Path
) -> None:
    spool_dir = short_tmp / "spool"
    d = Daemon(short_tmp, env={"REVERIE_SPOOL_DIR": str(spool_dir)})
    hooks = Hooks(short_tmp, d.socket)
    sent = payloads(str(project))
    for p in sent:
        assert hooks.run(p).stdout == b""  # no daemon: no briefing, no memories
    assert hooks.run(b"this is not json").stdout == b""
    spooled = hooks.spooled()
    assert len(spooled) == len(sent) + 1
    assert {e.type for e in spooled} == {p["hook_event_name"] for p in sent} | {"unparsed"}
    assert all(isinstance(e.at, dt.datetime) for e in spooled)
    assert "spooled" in hooks.log_text()
    with d:
        deadline = time.monotonic() + 30
        while spool.pending(spool_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spool.pending(spool_dir) == []
        stored = events(d)
        assert sorted(e.key for e in stored) == sorted(e.key for e in spooled)
        for p in sent:  # the same hooks again, daemon up: all duplicates
            hooks.run(p)
        assert len(events(d)) == len(spooled)


@pytest.mark.parametrize(
    "where",
    ["missing", "regular file", "directory", "dangling symlink", "nobody listening"],
)
def test_an_unusable_socket_never_fails_the_hook(short_tmp: Path, where: str) -> None:
    path = short_tmp / "s.sock"
    if where == "regular file":
        path.write_text("not a socket")
    elif where == "directory":
        path.mkdir()
    elif where == "dangling symlink":
        path.symlink_to(short_tmp / "gone")
    elif where == "nobody listening":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.close()  # the path stays, nothing accepts: ECONNREFUSED
    hooks = Hooks(short_tmp, path)
    started = time.monotonic()
    for p in payloads(str(short_tmp))[:2]:
        assert hooks.run(p).stdout == b""
    assert time.monotonic() - started < 10
    assert [e.type for e in hooks.spooled()] == ["SessionStart", "UserPromptSubmit"]


def test_bad_input_never_fails_the_hook(daemon: Daemon, hooks: Hooks, project: Path) -> None:
    cases: list[bytes] = [
        b"",
        b"   \n",
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"a string"',
        b"null",
        b"[" * 100_000 + b"]" * 100_000,  # deeper than json.loads goes
        json.dumps({"hook_event_name": 42, "session_id": ["x"], "cwd": 7}).encode(),
        json.dumps({"hook_event_name": "Weird Event/Name!", "session_id": "s" * 500}).encode(),
        json.dumps({"hook_event_name": "UserPromptSubmit", "prompt": None}).encode(),
        json.dumps({"hook_event_name": "SessionStart", "cwd": "/does/not/exist"}).encode(),
        b'{"hook_event_name": "Stop", "x": "\\ud800 lone", "n": 123456789012345678901234567890}',
    ]
    for data in cases:
        hooks.run(data)
    stored = events(daemon)
    assert hooks.spooled() == [], hooks.log_text()
    assert "Weird-Event-Name" in {e.type for e in stored}
    assert "unparsed" in {e.type for e in stored}
    assert "Traceback" not in hooks.log_text()


def test_a_huge_payload_is_trimmed_not_refused(daemon: Daemon, hooks: Hooks, project: Path) -> None:
    big = "x" * (8 << 20)
    payload = {
        "session_id": SESSION,
        "cwd": str(project),
        "hook_event_name": "PostToolUse",
        "tool_name": "Read",
        "tool_use_id": "toolu_big",
        "tool_input": {"file_path": "/big.log"},
        "tool_response": {"file": {"content": big}, "lines": list(range(5000))},
    }
    hooks.run(payload)
    (stored,) = events(daemon, type="PostToolUse")
    content = stored.payload["tool_response"]["file"]["content"]
    assert "trimmed" in content and len(content) < 1 << 20
    assert len(json.dumps(stored.payload)) < 2 << 20
    # With the daemon down, the spool gets the trimmed event too.
    down = Hooks(hooks.root / "down", hooks.root / "down" / "no.sock")
    down.run({**payload, "tool_use_id": "toolu_big2"})
    (spooled,) = down.spooled()
    assert len(msgspec.json.encode(spooled)) < 2 << 20


def test_a_hung_daemon_costs_one_short_wait(short_tmp: Path, project: Path) -> None:
    """A daemon that accepts but never answers: the hook gives up, spools, and
    the next hooks do not wait for it again (the breaker)."""
    path = short_tmp / "hung.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    try:
        hooks = Hooks(short_tmp, path)
        prompt = payloads(str(project))[1]
        started = time.monotonic()
        assert hooks.run(prompt, env={"REVERIE_HOOK_TIMEOUT": "0.5"}).stdout == b""
        first = time.monotonic() - started
        assert 0.5 <= first < 10
        started = time.monotonic()
        hooks.run(prompt, env={"REVERIE_HOOK_TIMEOUT": "5"})
        assert time.monotonic() - started < 5  # did not wait its 5 s
        assert len(hooks.spooled()) == 2
        assert "no complete answer" in hooks.log_text()
    finally:
        server.close()


def test_arguments_never_fail_the_hook(daemon: Daemon, hooks: Hooks, project: Path) -> None:
    p = payloads(str(project))[2]
    hooks.run(p, "claude-code", "--bogus", "--json")
    hooks.run(p, "nonsense-harness")
    hooks.run(p, "--socket")  # an option without its value
    hooks.run(p, "--socket", str(daemon.socket), "claude-code")
    # The console script's path (rpc/cli.py main) takes the same fast path.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from reverie.rpc.cli import main; "
            "sys.exit(main(['hook', 'claude-code', '--no-such-option']))",
        ],
        input=json.dumps({**p, "tool_use_id": "toolu_cli"}).encode(),
        capture_output=True,
        env=hooks.env,
        timeout=30,
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, b"", b"")
    keys = {e.key for e in events(daemon, type="PreToolUse")}
    assert keys == {f"cc:{SESSION}:PreToolUse:tool:{t}" for t in ("toolu_01", "toolu_cli")}
    assert "ignored arguments" in hooks.log_text()
    helped = subprocess.run(
        [sys.executable, "-m", "reverie", "hook", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "claude-code" in helped.stdout


def test_the_hook_imports_neither_msgspec_nor_argparse(
    daemon: Daemon, hooks: Hooks, project: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "reverie", "hook", "claude-code"],
        input=json.dumps(payloads(str(project))[1]).encode(),
        capture_output=True,
        env=hooks.env,
        timeout=30,
    )
    assert out.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.decode().splitlines()}
    assert "reverie.rpc.hook" in imported
    heavy = {"msgspec", "argparse", "reverie.rpc.client", "reverie.daemon", "trio", "apsw"}
    assert not heavy & imported
    assert len(events(daemon)) == 1  # and it did post


# -- generic ------------------------------------------------------------------------------


def test_generic_hook(daemon: Daemon, hooks: Hooks, project: Path) -> None:
    args = ("generic", "--event", "build", "--harness", "ci", "--session", "run-7")
    body = {"status": "failed", "step": "test"}
    for _ in range(2):
        hooks.run(body, *args, "--workspace", str(project))
    hooks.run(b"plain text output", *args, f"--workspace={project}")
    hooks.run(b"[1, 2]", *args, "--workspace", "git:example.com/team/app")
    hooks.run({"cwd": str(project), "x": 1}, "generic", "--event", "tool_use", "--key", "k-1")
    hooks.run({"cwd": str(project), "x": 2}, "generic", "--event", "tool_use", "--key", "k-1")
    hooks.run({"y": 1}, "generic")  # no --event: kept as "unknown"
    stored = {e.key: e for e in events(daemon)}
    build = [e for e in stored.values() if e.type == "build"]
    assert len(build) == 3
    assert {e.harness for e in build} == {"ci"} and {e.session_id for e in build} == {"run-7"}
    payload_of = {json.dumps(e.payload, sort_keys=True): e for e in build}
    assert payload_of[json.dumps(body, sort_keys=True)].workspace == ws(project)
    assert payload_of['{"text": "plain text output"}'].workspace == ws(project)
    assert payload_of['{"value": [1, 2]}'].workspace == "git:example.com/team/app"
    assert stored["k-1"].payload == {"cwd": str(project), "x": 1}  # the key made it one event
    assert stored["k-1"].workspace == ws(project) and stored["k-1"].harness == "generic"
    assert "unknown" in {e.type for e in stored.values()}


# -- the wire client agrees with the protocol -------------------------------------------


def test_hook_wire_speaks_the_protocol() -> None:
    assert hook_wire.PROTOCOL_VERSION == PROTOCOL_VERSION
    event = {
        "key": "k",
        "harness": "claude-code",
        "type": "Stop",
        "workspace": "path:/x",
        "session_id": None,
        "payload": {
            "s": "é" * 40,
            "long": "y" * 70_000,
            "n": [0, 127, 128, -1, -32, -33, 255, 65536, 2**40, -(2**40), 2**64 - 1, -(2**63)],
            "f": 1.5,
            "b": [True, False, None],
            "d": {str(i): i for i in range(20)},
            "big": 2**70,
        },
        "at": hook._iso(1_700_000_000.25),
    }
    requests = [
        {"method": "hello", "id": 0, "protocol": 1, "client": "x"},
        {"method": "post_events", "id": 1, "events": [event]},
        {"method": "search", "id": 2, "query": "q", "workspace": "w", "limit": 10},
        {"method": "brief", "id": 3, "workspace": "w", "budget": 4000, "session_id": "s"},
    ]
    for request in requests:
        decoded = msgspec.msgpack.decode(hook_wire.pack(request), type=Request)
        assert msgspec.to_builtins(decoded)["method"] == request["method"]
    posted = msgspec.msgpack.decode(hook_wire.pack(requests[1]), type=Request)
    sent = posted.events[0]  # type: ignore[union-attr]
    assert sent.payload["big"] == str(2**70) and sent.payload["long"] == "y" * 70_000
    assert sent.payload["n"] == event["payload"]["n"]
    assert sent.at == dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=dt.UTC)
    now = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    memory = Memory(
        id=7,
        uid="u",
        workspace="w",
        kind="fact",
        content="c" * 300,
        tags=["a"],
        importance=0.5,
        tier="short",
        state="active",
        superseded_by=None,
        provenance={},
        created_at=now,
        observed_at=dt.datetime(1960, 1, 1, tzinfo=dt.UTC),
        updated_at=now,
        last_recalled_at=None,
        recall_count=3,
        distinct_queries=1,
        content_hash="h",
        metadata={"x": [1.25, None]},
    )
    result = SearchResult(hits=[Hit(memory=memory, score=0.25)] * 20)
    back = hook_wire.unpack(msgspec.msgpack.encode({"id": 2, "result": result}))
    hit = back["result"]["hits"][0]
    assert hit["score"] == 0.25 and hit["memory"]["content"] == "c" * 300
    assert hit["memory"]["created_at"] == pytest.approx(now.timestamp())
    assert hit["memory"]["observed_at"] == pytest.approx(
        dt.datetime(1960, 1, 1, tzinfo=dt.UTC).timestamp()
    )
    assert hit["memory"]["metadata"] == {"x": [1.25, None]}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("REVERIE_") or name in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(short_tmp / "config"))
    yield short_tmp


def test_socket_path_agrees_with_the_client(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def same() -> str:
        assert hook.socket_path() == str(resolve_socket())
        return hook.socket_path()

    default = "/run/reverie/reverie.sock" if os.getuid() == 0 else f"/tmp/reverie-{os.getuid()}/"
    assert same().startswith(default)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert same() == "/run/user/1000/reverie/reverie.sock"
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/rv:/other")
    assert same() == "/run/rv/reverie.sock"
    config = clean_env / "config" / "reverie" / "reverie.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[daemon]\nsocket = "/srv/rv.sock"\n')
    assert same() == "/srv/rv.sock"
    other = clean_env / "other.toml"
    other.write_text("[daemon]\nsocket = '~/x.sock'\n[search]\nmode = 'lexical'\n")
    monkeypatch.setenv("REVERIE_CONFIG", str(other))
    assert same() == os.path.expanduser("~/x.sock")
    monkeypatch.setenv("REVERIE_SOCKET", "/env.sock")
    assert same() == "/env.sock"
    assert hook.socket_path("/explicit.sock") == "/explicit.sock"


@pytest.mark.skipif(shutil.which("jq") is None, reason="the example uses jq")
def test_the_generic_readme_shell_examples_post(
    daemon: Daemon, hooks: Hooks, project: Path
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "contrib" / "generic" / "README.md").read_text()
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "hook generic" in b]
    assert len(blocks) == 2
    env = {
        **hooks.env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SESSION_ID": "s-1",
        "RUN_ID": "r-1",
        "TOOL_CMD": "make test",
        "TOOL_OUTPUT": "3 failed, 12 passed",
    }
    for block in blocks:
        out = subprocess.run(
            ["bash", "-c", block], cwd=project, env=env, capture_output=True, timeout=60
        )
        assert (out.returncode, out.stdout, out.stderr) == (0, b"", b"")
    stored = {e.harness: e for e in events(daemon)}
    assert stored["myagent"].payload["prompt"] == "add retries to the uploader"
    assert stored["myagent"].workspace == ws(project)
    assert stored["myshell"].payload["tool_response"] == {"stdout": "3 failed, 12 passed"}
    with daemon.client() as c:
        hits = c.search("3 failed", workspace=ws(project)).hits
    assert any("make test" in h.memory.content for h in hits)


def test_an_unwritable_stdout_does_not_change_the_exit_status(
    daemon: Daemon, hooks: Hooks, project: Path
) -> None:
    with daemon.client() as c:
        c.remember("The release checklist lives in docs/release.md", workspace=ws(project))
    start = {"session_id": SESSION, "cwd": str(project), "hook_event_name": "SessionStart"}
    assert hooks.context(start)  # there is something to print
    with open("/dev/full", "wb") as full:  # every write fails with ENOSPC
        out = subprocess.run(
            [sys.executable, "-m", "reverie", "hook", "claude-code"],
            input=json.dumps(start).encode(),
            stdout=full,
            stderr=subprocess.PIPE,
            env=hooks.env,
            timeout=30,
        )
    assert (out.returncode, out.stderr) == (0, b"")
