"""Episodes: lifecycle, steps, redaction, the reward formula, similar episodes, the CLI.

The store functions run on a real SQLite database; the rest goes through the
real daemon and client, and the CLI through real processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import apsw
import msgspec
import pytest
from harness import Daemon, wait_indexed
from reverie.daemon.config import SearchConfig
from reverie.errors import Conflict, InvalidParams, NotFound
from reverie.rpc.client import Client
from reverie.rpc.proto_episodes import (
    CompleteEpisode,
    Episode,
    EpisodeContext,
    EpisodeList,
    GetEpisode,
    ListEpisodes,
    LogStep,
    SimilarEpisodes,
    SimilarEpisodesResult,
    StartEpisode,
)
from reverie.rpc.workspace import workspace_for
from reverie.store import episodes, schema
from reverie.store.connection import open_connection
from reverie.store.reward import LATENCY_BASELINE_MS, STEP_BASELINE, reward

GITHUB_TOKEN = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5"
PY_TRIO = EpisodeContext(language="python", framework="trio", tags=["tests"])


def _json(obj: object) -> str:
    return msgspec.json.encode(obj).decode()


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[apsw.Connection]:
    c = open_connection(tmp_path / "reverie.db")
    schema.migrate(c)
    yield c
    c.close()


# -- the reward formula -------------------------------------------------------------------


def test_reward_is_the_outcome_without_steps() -> None:
    assert reward("success", steps=0, errors=0, latency_ms=0).value == 1.0
    assert reward("partial", steps=0, errors=0, latency_ms=0).value == 0.5
    assert reward("failure", steps=0, errors=0, latency_ms=0).value == 0.0


def test_reward_penalties_at_their_edges() -> None:
    # Within the baselines nothing is taken off.
    clean = reward("success", steps=STEP_BASELINE, errors=0, latency_ms=LATENCY_BASELINE_MS)
    assert (clean.value, clean.step_penalty, clean.latency_penalty) == (1.0, 0.0, 0.0)
    # Every step failed: the whole error weight.
    assert reward("success", steps=4, errors=4, latency_ms=0).error_penalty == 0.25
    assert reward("success", steps=4, errors=4, latency_ms=0).value == 0.75
    # Half the steps failed, on a partial: 0.5 x (1 - 0.125).
    assert reward("partial", steps=4, errors=2, latency_ms=0).value == 0.4375
    # Twice the baselines: half of each weight.
    double = reward("success", steps=2 * STEP_BASELINE, errors=0, latency_ms=0)
    assert double.step_penalty == 0.075 and double.value == 0.925
    slow = reward("success", steps=1, errors=0, latency_ms=2 * LATENCY_BASELINE_MS)
    assert slow.latency_penalty == 0.05 and slow.value == 0.95
    # One step over the baseline already costs a little; more always costs more.
    assert reward("success", steps=STEP_BASELINE + 1, errors=0, latency_ms=0).value < 1.0
    values = [reward("success", steps=n, errors=0, latency_ms=0).value for n in (10, 20, 40, 80)]
    assert values == sorted(values, reverse=True) and len(set(values)) == 4


def test_reward_bands_never_cross_and_stay_in_range() -> None:
    worst = {"steps": 10**9, "errors": 10**9, "latency_ms": 10**12}
    worst_success = reward("success", **worst).value
    best_partial = reward("partial", steps=1, errors=0, latency_ms=1).value
    worst_partial = reward("partial", **worst).value
    assert worst_success >= 0.5 >= best_partial
    assert best_partial > worst_partial >= 0.25
    assert reward("failure", steps=1, errors=0, latency_ms=0).value == 0.0
    for outcome in ("success", "partial", "failure"):
        for steps in (0, 1, 9, 10, 11, 100, 10**6):
            for errors in {0, steps // 2, steps}:
                for latency in (0, 1, LATENCY_BASELINE_MS, 10**12):
                    r = reward(outcome, steps=steps, errors=errors, latency_ms=latency)
                    assert 0.0 <= r.value <= 1.0
                    # Deterministic: the same inputs, the same number.
                    assert r == reward(outcome, steps=steps, errors=errors, latency_ms=latency)


# -- ranking pieces ----------------------------------------------------------------------


def test_context_overlap_counts_what_the_query_names(conn: apsw.Connection) -> None:
    ctx = EpisodeContext(language="Python", framework="trio", tags=["tests", "ci"])
    eid = episodes.start(conn, StartEpisode(description="x", context=ctx, task_type="debugging")).id
    ep = episodes._summary_row(conn, eid)
    assert episodes.context_overlap(EpisodeContext(), None, ep) is None
    assert episodes.context_overlap(EpisodeContext(language="python"), None, ep) == 1.0
    both = EpisodeContext(language="python", framework="django")
    assert episodes.context_overlap(both, None, ep) == 0.5
    tags = EpisodeContext(tags=["tests", "docs"])
    assert episodes.context_overlap(tags, "debugging", ep) == 0.75  # tags 1/2, task type 1


def test_rank_score_lets_relevance_gate() -> None:
    assert episodes.rank_score(1.0, 1.0, 1.0) == 1.0
    assert episodes.rank_score(1.0, 0.0, None) == 0.5  # a failure keeps half
    assert episodes.rank_score(1.0, 1.0, 0.0) == pytest.approx(0.7)  # another stack
    # An unrelated success never beats a relevant failure on reward alone.
    assert episodes.rank_score(0.3, 1.0, 1.0) < episodes.rank_score(1.0, 0.0, 1.0)


# -- the store on real SQLite -------------------------------------------------------------


def test_store_lifecycle_numbers_steps_and_trims(conn: apsw.Connection) -> None:
    started = episodes.start(
        conn, StartEpisode(description="Add retries", workspace="w", context=PY_TRIO)
    )
    long = "x" * (episodes.STEP_TEXT_MAX + 500)
    for i in range(3):
        logged = episodes.log_step(
            conn,
            LogStep(
                episode_id=started.id,
                tool="bash",
                action=f"run {i}",
                result=long,
                success=i != 1,
                latency_ms=10,
            ),
        )
        assert logged.n == i + 1
    ep = episodes.get(conn, started.id)
    assert [s.n for s in ep.steps] == [1, 2, 3]
    assert [s.action for s in ep.steps] == ["run 0", "run 1", "run 2"]
    assert (ep.step_count, ep.error_count, ep.latency_ms) == (3, 1, 30)
    assert ep.steps[0].result.endswith("…[trimmed 500 chars]")
    assert len(ep.steps[0].result) < len(long)
    done = episodes.complete(conn, CompleteEpisode(episode_id=started.id, outcome="success"))
    assert done.reward == reward("success", steps=3, errors=1, latency_ms=30).value
    assert done.memory_id is not None
    kind, content, meta = conn.execute(
        "SELECT kind, content, metadata FROM memories WHERE id = ?", (done.memory_id,)
    ).fetchone()
    assert kind == "episode" and "Add retries" in content and "python" in content
    assert json.loads(meta)["episode_id"] == started.id


def test_store_huge_parameters_are_trimmed_not_refused(conn: apsw.Connection) -> None:
    eid = episodes.start(conn, StartEpisode(description="big")).id
    episodes.log_step(
        conn, LogStep(episode_id=eid, tool="write", parameters={"body": "y" * 50_000})
    )
    params = episodes.get(conn, eid).steps[0].parameters
    assert list(params) == ["_trimmed"] and "trimmed" in params["_trimmed"]


def test_store_similar_lexical_ranking(conn: apsw.Connection) -> None:
    """Without a vector index (lexical only): relevance, then reward, then context."""

    def run(desc: str, outcome: str, ctx: EpisodeContext = PY_TRIO) -> int:
        eid = episodes.start(conn, StartEpisode(description=desc, workspace="w", context=ctx)).id
        episodes.log_step(conn, LogStep(episode_id=eid, tool="pytest", action="run the suite"))
        episodes.complete(conn, CompleteEpisode(episode_id=eid, outcome=outcome))
        return eid

    good = run("Fix the flaky websocket reconnect test", "success")
    bad = run("Fix the flaky websocket reconnect test", "failure")
    rust = run("Fix the flaky websocket reconnect test", "success", EpisodeContext(language="rust"))
    other = run("Write release notes for version two", "success")
    req = SimilarEpisodes(description="flaky websocket reconnect test", context=PY_TRIO)
    found, recalled = episodes.similar(conn, req, cfg=SearchConfig(), indexer=None)
    order = [m.episode.id for m in found.matches]
    assert found.mode == "lexical" and order[:3] == [good, rust, bad], order
    # It shares only the word "test" (through its tag "tests"): last, far behind.
    assert order[-1] == other and found.matches[-1].relevance < 0.5
    memory_of = dict(conn.execute("SELECT id, memory_id FROM episodes").fetchall())
    assert [mid for mid, _ in recalled] == [memory_of[e] for e in order]
    assert found.matches[0].worked == ["pytest: run the suite"]
    only_failures = SimilarEpisodes(description="flaky websocket", outcomes=["failure"])
    failed, _ = episodes.similar(conn, only_failures, cfg=SearchConfig(), indexer=None)
    assert [m.episode.id for m in failed.matches] == [bad]


# -- through the daemon ----------------------------------------------------------------------


def _episode(
    c: Client,
    desc: str,
    outcome: str,
    *,
    workspace: str = "proj",
    ctx: EpisodeContext = PY_TRIO,
    steps: list[tuple[str, str, bool]] | None = None,
) -> Episode:
    eid = c.call(StartEpisode(description=desc, workspace=workspace, context=ctx)).id
    for tool, action, ok in steps or [("edit", "patch the code", True)]:
        c.call(LogStep(episode_id=eid, tool=tool, action=action, success=ok, latency_ms=50))
    done: Episode = c.call(CompleteEpisode(episode_id=eid, outcome=outcome))
    return done


def test_lifecycle_through_the_daemon(daemon: Daemon) -> None:
    with daemon.client() as c:
        started = c.call(
            StartEpisode(
                description="Implement async HTTP client with retry logic",
                workspace="proj",
                context=EpisodeContext(language="python", domain="networking", tags=["http"]),
                task_type="code_generation",
                session_id="sess-1",
            )
        )
        assert started.workspace == "proj"
        steps = [
            ("read", "read client.py", True, "", 5),
            ("bash", "pytest tests/test_client.py", False, "2 failed: timeout", 4000),
            ("edit", "add exponential backoff", True, "", 20),
            ("bash", "pytest tests/test_client.py", True, "", 3500),
        ]
        for i, (tool, action, ok, err, ms) in enumerate(steps, 1):
            logged = c.call(
                LogStep(
                    episode_id=started.id,
                    tool=tool,
                    action=action,
                    success=ok,
                    error=err,
                    latency_ms=ms,
                    result="ok" if ok else "",
                )
            )
            assert logged.n == i
        open_ep: Episode = c.call(GetEpisode(episode_id=started.id))
        assert open_ep.outcome is None and open_ep.reward is None and open_ep.completed_at is None
        assert [s.action for s in open_ep.steps] == [s[1] for s in steps]

        done: Episode = c.call(
            CompleteEpisode(episode_id=started.id, outcome="success", notes="backoff fixed it")
        )
        expected = reward("success", steps=4, errors=1, latency_ms=7525)
        assert done.reward == expected.value and done.reward_detail == expected
        assert (done.outcome, done.notes, done.session_id) == (
            "success",
            "backoff fixed it",
            "sess-1",
        )
        assert done.completed_at is not None and done.memory_id is not None
        memory = c.get(done.memory_id)
        assert memory.kind == "episode" and memory.metadata["episode_id"] == started.id
        assert memory.workspace == "proj" and "retry logic" in memory.content

        # A retried completion gets the same answer; anything else is a conflict.
        again: Episode = c.call(
            CompleteEpisode(episode_id=started.id, outcome="success", notes="backoff fixed it")
        )
        assert again == done
        with pytest.raises(Conflict, match="already completed"):
            c.call(CompleteEpisode(episode_id=started.id, outcome="failure"))
        with pytest.raises(Conflict, match=r"episode \d+ is already completed \(success\)"):
            c.call(LogStep(episode_id=started.id, tool="bash"))
        assert len(c.call(GetEpisode(episode_id=started.id)).steps) == 4


def test_pipelined_steps_are_numbered_without_gaps(daemon: Daemon) -> None:
    with daemon.client() as c:
        eid = c.call(StartEpisode(description="many steps")).id
        logged = c.call_many([LogStep(episode_id=eid, tool=f"t{i}") for i in range(50)])
        assert sorted(s.n for s in logged) == list(range(1, 51))
        steps = c.call(GetEpisode(episode_id=eid)).steps
        assert [s.n for s in steps] == list(range(1, 51))
        # Each answer names the number its step got.
        assert {(s.n, s.tool) for s in steps} == {(r.n, f"t{i}") for i, r in enumerate(logged)}


def test_errors_are_typed(daemon: Daemon) -> None:
    with daemon.client() as c:
        with pytest.raises(NotFound, match="no episode with id 999"):
            c.call(GetEpisode(episode_id=999))
        with pytest.raises(NotFound):
            c.call(LogStep(episode_id=999, tool="bash"))
        with pytest.raises(NotFound):
            c.call(CompleteEpisode(episode_id=999, outcome="success"))
        eid = c.call(StartEpisode(description="task")).id
        with pytest.raises(InvalidParams):
            c.call(CompleteEpisode(episode_id=eid, outcome="great"))
        with pytest.raises(InvalidParams):
            c.call(StartEpisode(description=""))
        with pytest.raises(InvalidParams):
            c.call(StartEpisode(description="x", task_type="Not A Type"))
        with pytest.raises(InvalidParams):
            c.call(LogStep(episode_id=eid, tool="bash", latency_ms=-1))
        assert c.call(GetEpisode(episode_id=eid)).outcome is None  # nothing half-done
        c.ping()


def test_secrets_are_redacted_in_steps_and_texts(daemon: Daemon) -> None:
    with daemon.client() as c:
        eid = c.call(
            StartEpisode(description=f"Rotate the token {GITHUB_TOKEN}", workspace="proj")
        ).id
        c.call(
            LogStep(
                episode_id=eid,
                tool="bash",
                action=f"gh auth login --with-token {GITHUB_TOKEN}",
                parameters={"env": {"GITHUB_TOKEN": "plain-value-1"}, "argv": [GITHUB_TOKEN]},
                result=f"logged in with {GITHUB_TOKEN}",
                error="",
            )
        )
        done: Episode = c.call(
            CompleteEpisode(episode_id=eid, outcome="success", notes=f"used {GITHUB_TOKEN}")
        )
        for text in (
            _json(done),
            _json(c.get(done.memory_id or 0)),
            _json(c.call(ListEpisodes(workspace="proj"))),
            _json(c.call(SimilarEpisodes(description="rotate the token"))),
        ):
            assert GITHUB_TOKEN not in text and "plain-value-1" not in text
            assert "[REDACTED:" in text
        step = done.steps[0]
        assert step.parameters["env"]["GITHUB_TOKEN"].startswith("[REDACTED:")
        assert step.parameters["argv"][0].startswith("[REDACTED:")
        # Stored redacted, not only returned redacted.
        db = apsw.Connection(str(daemon.data_dir / "reverie.db"), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            for table in ("episodes", "steps", "memories"):
                rows = db.execute(f"SELECT * FROM {table}").fetchall()
                assert GITHUB_TOKEN not in repr(rows) and "plain-value-1" not in repr(rows)
        finally:
            db.close()


def test_list_filters_and_pages(daemon: Daemon) -> None:
    with daemon.client() as c:
        a = _episode(c, "first task", "success", workspace="one")
        b = _episode(c, "second task", "failure", workspace="one")
        opened = c.call(
            StartEpisode(description="still going", workspace="one", task_type="testing")
        ).id
        other = _episode(c, "elsewhere", "success", workspace="two")

        def ids(**kw: object) -> list[int]:
            res: EpisodeList = c.call(ListEpisodes(**kw))
            return [e.id for e in res.episodes]

        assert ids() == [other.id, opened, b.id, a.id]  # most recent first
        assert ids(workspace="one") == [opened, b.id, a.id]
        assert ids(outcome="success") == [other.id, a.id]
        assert ids(status="open") == [opened]
        assert ids(status="completed", workspace="one") == [b.id, a.id]
        assert ids(task_type="testing") == [opened]
        page: EpisodeList = c.call(ListEpisodes(limit=3))
        assert page.next_before_id == b.id
        rest: EpisodeList = c.call(ListEpisodes(limit=3, before_id=page.next_before_id))
        assert [e.id for e in rest.episodes] == [a.id] and rest.next_before_id is None
        assert c.call(ListEpisodes(workspace="one")).episodes[0].step_count == 0


def test_similar_episodes_ranking(daemon: Daemon) -> None:
    task = "Fix the flaky trio test for the socket server shutdown"
    with daemon.client() as c:
        good = _episode(
            c,
            task,
            "success",
            steps=[
                ("bash", "pytest -x tests/test_shutdown.py", False),
                ("edit", "use trio MockClock instead of sleeps", True),
                ("bash", "pytest -x tests/test_shutdown.py", True),
            ],
        )
        failed = _episode(c, task, "failure", steps=[("edit", "increase the timeout", True)])
        unrelated = _episode(
            c,
            "Write the changelog for the release in markdown",
            "success",
            ctx=EpisodeContext(language="markdown"),
        )
        elsewhere = _episode(c, task, "success", workspace="other-project")
        wait_indexed(c)  # hybrid: the vector side sees every episode too
        res: SimilarEpisodesResult = c.call(
            SimilarEpisodes(
                description="flaky trio test in the socket server",
                context=PY_TRIO,
                workspace="proj",
            )
        )
        assert res.mode == "hybrid", res.notes
        order = [m.episode.id for m in res.matches]
        assert order[:2] == [good.id, failed.id], order
        assert elsewhere.id not in order  # another workspace
        if unrelated.id in order:
            assert order.index(unrelated.id) > order.index(failed.id)
        top = res.matches[0]
        assert top.relevance > 0 and top.context_overlap == 1.0
        assert top.episode.step_count == 3 and top.episode.outcome == "success"
        assert top.worked == [
            "edit: use trio MockClock instead of sleeps",
            "bash: pytest -x tests/test_shutdown.py",
        ]
        assert top.failed == ["bash: pytest -x tests/test_shutdown.py"]
        assert res.matches[1].score < top.score

        everywhere: SimilarEpisodesResult = c.call(
            SimilarEpisodes(description="flaky trio test socket server", context=PY_TRIO, limit=10)
        )
        assert elsewhere.id in [m.episode.id for m in everywhere.matches]
        # Open episodes are not experience yet.
        c.call(StartEpisode(description=task, workspace="proj"))
        again: SimilarEpisodesResult = c.call(
            SimilarEpisodes(description=task, workspace="proj", limit=10)
        )
        assert all(m.episode.outcome is not None for m in again.matches)


# -- the CLI --------------------------------------------------------------------------------


def _cli(d: Daemon, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reverie", "episode", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=d.environ(),
        cwd=cwd,
    )


def test_cli_round_trip(daemon: Daemon, short_tmp: Path) -> None:
    here = workspace_for(short_tmp).id
    out = _cli(
        daemon,
        "start",
        "Speed up the importer",
        "--type",
        "refactoring",
        "--language",
        "python",
        "--tag",
        "perf",
        cwd=short_tmp,
    )
    assert out.returncode == 0, out.stderr
    eid = int(out.stdout)
    step = _cli(
        daemon, "step", str(eid), "bash", "profile it", "--param", "n=3", "--latency-ms", "900"
    )
    assert step.returncode == 0 and step.stdout.strip() == f"episode #{eid} step 1", step.stderr
    failed = _cli(
        daemon,
        "step",
        str(eid),
        "bash",
        "run tests",
        "--error",
        "1 failed",
        "--json",
        "--params",
        '{"cmd": "pytest"}',
    )
    assert json.loads(failed.stdout) == {"episode_id": eid, "n": 2}
    end = _cli(daemon, "end", str(eid), "partial", "--notes", "halfway there")
    assert end.returncode == 0 and f"episode #{eid}: partial, reward" in end.stdout

    shown = json.loads(_cli(daemon, "show", str(eid), "--json").stdout)
    assert shown["workspace"] == here and shown["task_type"] == "refactoring"
    assert [s["success"] for s in shown["steps"]] == [True, False]
    assert shown["steps"][0]["parameters"] == {"n": 3}
    assert shown["steps"][1]["parameters"] == {"cmd": "pytest"}
    human = _cli(daemon, "show", str(eid)).stdout
    assert "Speed up the importer" in human and "ERR bash: run tests" in human

    listed = json.loads(_cli(daemon, "list", "--json", cwd=short_tmp).stdout)
    assert [e["id"] for e in listed["episodes"]] == [eid]
    assert (
        json.loads(_cli(daemon, "--json", "list", "--workspace", "nope").stdout)["episodes"] == []
    )
    assert f"#{eid}" in _cli(daemon, "list", "--all-workspaces").stdout

    similar = _cli(daemon, "similar", "speed up importer", "--language", "python", cwd=short_tmp)
    assert similar.returncode == 0 and f"#{eid}" in similar.stdout
    assert "worked: bash: profile it" in similar.stdout
    assert "failed: bash: run tests: 1 failed" in similar.stdout


def test_cli_errors_and_exit_codes(daemon: Daemon) -> None:
    missing = _cli(daemon, "show", "4242")
    assert missing.returncode == 4 and "no episode with id 4242" in missing.stderr
    assert missing.stderr.count("\n") == 1
    assert _cli(daemon, "step", "4242", "bash").returncode == 4
    eid = _cli(daemon, "start", "a task", "--workspace", "w").stdout.strip()
    assert _cli(daemon, "end", eid, "success").returncode == 0
    late = _cli(daemon, "step", eid, "bash")
    assert late.returncode == 2 and "already completed" in late.stderr
    bad = _cli(daemon, "step", eid, "bash", "--params", "[1]")
    assert bad.returncode == 2 and "JSON object" in bad.stderr
    assert _cli(daemon, "end", eid, "great").returncode == 2
    assert _cli(daemon).returncode == 2  # a subcommand is required
    helped = _cli(daemon, "similar", "--help")
    assert "--socket" in helped.stdout and "--json" in helped.stdout
