"""REM's optional LLM path against a real local HTTP server (no mocks).

The server (http.server in a thread on 127.0.0.1) answers POST
/v1/chat/completions from a script: canned completions, HTTP errors, bad
JSON, empty answers, answers slower than the client's timeout. Every
failure must fall back to the deterministic summary with the reason in the
run's notes; caps on calls and tokens must hold; the API key must never
show (repr, notes, daemon log); the stored text is redacted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dream_store import open_db
from harness import Daemon, wait_indexed
from reverie.phases.llm import Budget, ChatClient, LlmError, chat_url
from reverie.phases.ops_rem import SummarizeCluster
from reverie.phases.rem import Rem, RemConfig
from reverie.phases.runner import apply_plan, transact_on
from reverie.phases.settings import RemLlmConfig
from reverie.rpc.proto_dreams import DreamsRun, DreamsRunResult
from test_dream_rem import plant

KEY = "sk-test-7f3a9c1e5b2d4f6a8c0e"
GITHUB_TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass
class Chat:
    """The server's script (one entry per request, the last repeats) and what it saw."""

    script: list[tuple[Any, ...]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> tuple[Any, ...]:
        with self.lock:
            n = len(self.seen)
            return self.script[min(n - 1, len(self.script) - 1)] if self.script else ("ok", "x")


def _answer(text: str | None, usage: dict[str, int] | None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


@pytest.fixture
def server() -> Iterator[tuple[str, Chat]]:
    chat = Chat()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(size))
            with chat.lock:
                chat.seen.append({"path": self.path, **body})
                chat.auth.append(self.headers.get("Authorization", ""))
            step = chat.next()
            what = step[0]
            status, payload = 200, b""
            if what == "ok":
                text = step[1].format(n=len(chat.seen))  # {n}: the request's number
                payload = _answer(text, step[2] if len(step) > 2 else None)
            elif what == "status":
                status, payload = step[1], f"server says no; your key {KEY}".encode()
            elif what == "bad":
                payload = b"{not json"
            elif what == "empty":
                payload = _answer("", {"prompt_tokens": 50, "completion_tokens": 0})
            elif what == "slow":
                time.sleep(step[1])
                payload = _answer("too late", None)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (timeout)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", chat
    finally:
        httpd.shutdown()
        httpd.server_close()


def _cfg(url: str, **kw: Any) -> RemConfig:
    llm = {"url": url, "model": "tiny", "api_key": KEY, "timeout_s": 5.0, **kw}
    return RemConfig(llm=RemLlmConfig(**llm))


def _store(tmp_path: Path, cfg: RemConfig) -> tuple[Any, Rem, Any]:
    conn = open_db(tmp_path)
    plant(conn, time.time())
    rem = Rem(cfg)
    plan = rem.plan(conn, time.time())
    return conn, rem, plan


def test_config_and_client_never_show_the_key() -> None:
    cfg = RemLlmConfig(url="http://u:pw@127.0.0.1:9/v1", model="m", api_key=KEY)
    assert KEY not in repr(cfg) and KEY not in str(cfg) and "api_key='***'" in repr(cfg)
    assert KEY not in repr(RemConfig(llm=cfg))
    client = ChatClient(cfg)
    assert KEY not in repr(client) and "pw" not in repr(client)
    assert chat_url("http://h:1") == chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    with pytest.raises(LlmError, match="cannot connect") as e:  # port 9: nothing listens
        client.complete("s", "u", Budget(calls=1, tokens=10_000))
    assert KEY not in str(e.value) and "pw" not in str(e.value)


def test_llm_writes_the_summaries_redacted_within_caps(
    tmp_path: Path, server: tuple[str, Chat], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, chat = server
    monkeypatch.setenv("REVERIE_TEST_LLM_KEY", KEY)
    text = "Cluster {n}: the team keeps these facts together. Token " + GITHUB_TOKEN + " leaked."
    chat.script = [("ok", text, {"prompt_tokens": 300, "completion_tokens": 20})]
    cfg = _cfg(url + "/v1", api_key="", api_key_env="REVERIE_TEST_LLM_KEY", max_calls=3)
    conn, rem, plan = _store(tmp_path, cfg)
    assert "LLM tiny would write up to 3 of 7 cluster summaries" in plan.notes
    assert chat.seen == []  # planning (a dry run) never calls the model
    refined = rem.refine(plan, rem.summary_inputs(conn, plan))
    assert len(chat.seen) == 3 and chat.auth == [f"Bearer {KEY}"] * 3
    req = chat.seen[0]
    assert req["path"] == "/v1/chat/completions" and req["model"] == "tiny"
    assert req["max_tokens"] == 400 and req["messages"][0]["role"] == "system"
    assert "- [fact, " in req["messages"][1]["content"]  # the members' full texts
    sums = [op for op in refined.ops if isinstance(op, SummarizeCluster)]
    by_llm = [op for op in sums if op.writer == "llm:tiny"]
    assert len(by_llm) == 3 and all(op.writer == "deterministic" for op in sums[3:])
    assert (
        by_llm[0].content
        == "Cluster 1: the team keeps these facts together. Token [REDACTED:github_token] leaked."
    )
    assert [op.members for op in sums] == [
        op.members for op in plan.ops if isinstance(op, SummarizeCluster)
    ]
    assert "LLM tiny wrote 3 of 7 cluster summaries (3 calls, ~960 tokens)" in refined.notes
    assert "4 fell back to the deterministic text: call cap (3) reached (x4)" in refined.notes
    assert "would write" not in refined.notes and KEY not in refined.notes
    report = apply_plan(refined, transact=transact_on(conn))
    assert report.counts["summarize_cluster"] == 7 and "LLM tiny wrote 3" in report.notes
    stored = conn.execute(
        "SELECT content, json_extract(metadata, '$.writer') FROM memories "
        "WHERE kind = 'summary' ORDER BY id"
    ).fetchall()
    assert sum(w == "llm:tiny" for _, w in stored) == 3
    assert not any(GITHUB_TOKEN in c for c, _ in stored)


def test_token_cap_counts_usage_or_estimates(tmp_path: Path, server: tuple[str, Chat]) -> None:
    url, chat = server
    chat.script = [("ok", "short summary {n}", None)]  # no usage: estimated (chars / 4)
    conn, rem, plan = _store(tmp_path, _cfg(url, max_tokens=900, max_completion_tokens=100))
    refined = rem.refine(plan, rem.summary_inputs(conn, plan))
    calls = len(chat.seen)
    assert 1 <= calls < 7
    assert f"LLM tiny wrote {calls} of 7" in refined.notes
    assert "token cap (900) reached" in refined.notes
    tokens = int(refined.notes.split("~")[1].split(" ")[0])
    assert tokens <= 900


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (("status", 500), "HTTP 500"),
        (("status", 401), "HTTP 401"),
        (("bad",), "malformed response"),
        (("empty",), "empty answer"),
        (("slow", 1.5), "no answer within 0.3 s"),
    ],
)
def test_any_failure_falls_back_to_the_deterministic_text(
    tmp_path: Path, server: tuple[str, Chat], step: tuple[Any, ...], reason: str
) -> None:
    url, chat = server
    chat.script = [("ok", "The first cluster, summarized."), step]
    conn, rem, plan = _store(tmp_path, _cfg(url, timeout_s=0.3, max_calls=3))
    refined = rem.refine(plan, rem.summary_inputs(conn, plan))
    sums = [op for op in refined.ops if isinstance(op, SummarizeCluster)]
    planned = [op for op in plan.ops if isinstance(op, SummarizeCluster)]
    assert sums[0].content == "The first cluster, summarized." and sums[0].writer == "llm:tiny"
    assert [op.content for op in sums[1:]] == [op.content for op in planned[1:]]
    assert "LLM tiny wrote 1 of 7 cluster summaries" in refined.notes
    assert reason in refined.notes and "fell back to the deterministic text" in refined.notes
    assert KEY not in refined.notes  # the 4xx/5xx bodies echo it
    report = apply_plan(refined, transact=transact_on(conn))
    assert report.status == "completed" and report.counts["summarize_cluster"] == 7


def test_daemon_dry_run_never_calls_the_model_and_a_run_does(
    short_tmp: Path, server: tuple[str, Chat]
) -> None:
    url, chat = server
    chat.script = [("ok", "Billing, search and checkout ship with the Tuesday release train.")]
    config = (
        '[dreams]\npreset = "off"\n[dreams.rem.llm]\n'
        f'url = "{url}"\nmodel = "tiny"\napi_key_env = "REVERIE_TEST_LLM_KEY"\n'
    )
    env = {"REVERIE_TEST_LLM_KEY": KEY}
    with Daemon(short_tmp, config=config, env=env) as d, d.client() as c:
        ids = [
            c.remember(f"The release train deploys the {s} service every Tuesday morning.").id
            for s in ("billing", "search", "checkout")
        ]
        wait_indexed(c)
        dry: DreamsRunResult = c.call(DreamsRun(phase="rem", dry_run=True))
        assert dry.plan is not None and chat.seen == []
        assert dry.plan.counts == {"summarize_cluster": 1, "write_digest": 1}
        assert "LLM tiny would write up to 1 of 1 cluster summaries" in dry.plan.notes
        res: DreamsRunResult = c.call(DreamsRun(phase="rem"))
        assert res.report is not None and len(chat.seen) == 1
        assert chat.auth == [f"Bearer {KEY}"]
        assert "LLM tiny wrote 1 of 1 cluster summaries" in res.report.notes
        hits = c.search("Tuesday release train ship", limit=10).hits
        summary = next(h.memory for h in hits if h.memory.kind == "summary")
        assert summary.content.startswith("Billing, search and checkout ship")
        assert summary.provenance["memories"] == ids and summary.metadata["writer"] == "llm:tiny"
    assert KEY not in d.log_path.read_text()
