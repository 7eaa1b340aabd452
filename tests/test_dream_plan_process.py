"""Dream runs planned in a niced process of their own (phases/plan_worker.py), under
SCHED_IDLE unless it starves there (phases/plan_priority.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import trio
from dream_store import DB, open_db, populate
from harness import Daemon
from reverie.daemon.config import DreamsConfig
from reverie.phases.deep import DeepSleep
from reverie.phases.light import LightSleep
from reverie.phases.plan_priority import Sample, starved
from reverie.phases.plan_worker import NICENESS, PlanAnswer, PlanRequest
from reverie.phases.rem import Rem
from reverie.phases.service import Dreams
from reverie.rpc.proto_dreams import DreamsRun
from reverie.rpc.protocol import Remember
from reverie.store.database import Database
from test_dream_rem import embed_all, plant

WORKER = [sys.executable, "-m", "reverie.phases.plan_worker"]


def plan_in_a_process(db: Path, phase: str, now: float) -> PlanAnswer:
    req = PlanRequest(phase=phase, now=now, dreams=DreamsConfig())
    done = subprocess.run(
        [*WORKER, str(db)], input=msgspec.msgpack.encode(req), capture_output=True, check=True
    )
    return msgspec.msgpack.decode(done.stdout, type=PlanAnswer)


def test_the_process_plans_exactly_as_the_daemon_thread(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    populate(conn, now)
    plant(conn, now)
    embed_all(conn)
    for phase, impl in (
        ("light-sleep", LightSleep()),
        ("rem", Rem()),
        ("deep-sleep", DeepSleep()),
    ):
        answer = plan_in_a_process(tmp_path / DB, phase, now)
        assert answer.failed is None and answer.plan is not None
        here = impl.plan(conn, now)
        assert msgspec.json.encode(answer.plan) == msgspec.json.encode(here), phase
        assert answer.plan.ops or phase == "deep-sleep"  # the store gives them work
    conn.close()


def test_a_phase_error_comes_back_as_one(tmp_path: Path) -> None:
    open_db(tmp_path).close()
    answer = plan_in_a_process(tmp_path / DB, "nightmare", time.time())
    assert answer.plan is None and answer.failed is not None
    assert answer.failed.code == "invalid_params"
    gone = plan_in_a_process(tmp_path / "absent.db", "rem", time.time())
    assert gone.failed is not None and gone.plan is None


def test_a_daemon_gone_before_the_answer_costs_no_traceback(tmp_path: Path) -> None:
    """Killed mid-plan, the daemon closes its end: the worker exits quietly."""
    open_db(tmp_path).close()
    req = PlanRequest(phase="nightmare", now=time.time(), dreams=DreamsConfig())
    read, write = os.pipe()
    os.close(read)  # nobody will read the answer
    try:
        done = subprocess.run(
            [*WORKER, str(tmp_path / DB)],
            input=msgspec.msgpack.encode(req),
            stdout=write,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("idle", [False, True], ids=["nice", "idle"])
def test_the_process_runs_niced(tmp_path: Path, idle: bool) -> None:
    open_db(tmp_path).close()
    proc = subprocess.Popen(
        [*WORKER, *(["--idle"] if idle else []), str(tmp_path / DB)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    try:
        # The worker nices itself first, then reads its request: look while it waits.
        want = os.getpriority(os.PRIO_PROCESS, 0) + NICENESS
        deadline = time.monotonic() + 30
        while os.getpriority(os.PRIO_PROCESS, proc.pid) != want:
            assert time.monotonic() < deadline, "the worker never lowered its priority"
            time.sleep(0.02)
        while idle and os.sched_getscheduler(proc.pid) != os.SCHED_IDLE:
            assert time.monotonic() < deadline, "the worker never took SCHED_IDLE"
            time.sleep(0.02)
        if not idle:
            assert os.sched_getscheduler(proc.pid) == os.SCHED_OTHER
        req = PlanRequest(phase="light-sleep", now=time.time(), dreams=DreamsConfig())
        out, _ = proc.communicate(msgspec.msgpack.encode(req), timeout=60)
    finally:
        proc.kill()
        proc.wait()
    answer = msgspec.msgpack.decode(out, type=PlanAnswer)
    assert answer.plan is not None and answer.plan.ops == []  # an empty store


def test_the_daemon_plans_out_of_process_and_in_a_thread_when_told(tmp_path: Path) -> None:
    for plan_process, where in ((True, "in=process"), (False, "in=thread")):
        root = tmp_path / where.split("=")[1]
        root.mkdir()
        cfg = f'[dreams]\npreset = "off"\nplan_process = {str(plan_process).lower()}\n'
        with Daemon(root, config=cfg) as d, d.client() as c:
            for i in range(30):
                c.remember(f"memory {i} about the deploy pipeline", workspace="w")
            res = c.call(DreamsRun(phase="light-sleep"))
            assert res.report is not None and res.report.status == "completed"
            assert res.report.counts.get("set_meta") == 30
            assert f"dream_planned phase=light-sleep {where}" in d.log()
            assert "dream_plan_starved" not in d.log()  # the daemon leaves a core free


def light_sleep_over_ten(tmp_path: Path, setup: Callable[[Dreams], None]) -> None:
    """A light-sleep run over 10 memories by a Dreams service `setup` configures:
    it completes, and marks them all."""

    async def main() -> None:
        db = await Database.open(tmp_path)
        try:
            for i in range(10):
                await db.remember(Remember(content=f"memory {i} about things", workspace="w"))
            dreams = Dreams(db, tmp_path, DreamsConfig(preset="off"))
            setup(dreams)
            res = await dreams.run("light-sleep")
            assert res.report is not None and res.report.status == "completed"
            assert res.report.counts.get("set_meta") == 10
        finally:
            await db.close()

    trio.run(main)


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-c", "import sys; sys.exit(3)"], ["/nonexistent/python"]],
    ids=["exits-3", "cannot-start"],
)
def test_a_failing_plan_process_falls_back_to_the_thread(
    tmp_path: Path, command: list[str]
) -> None:
    def failing(dreams: Dreams) -> None:
        dreams.plan_in_process = command

    light_sleep_over_ten(tmp_path, failing)


def test_starving_is_waiting_for_a_cpu_without_running() -> None:
    before = Sample(cpu_s=1.0, wait_s=2.0)
    # 10 s windows: ran 0.1 s, runnable and waiting 9 s of them: starved.
    assert starved(before, Sample(cpu_s=1.1, wait_s=11.0), 10.0)
    # Ran half a second: slow, not starved.
    assert not starved(before, Sample(cpu_s=1.5, wait_s=11.0), 10.0)
    # Hardly ran but hardly waited either (blocked on the disk, or done): not starved.
    assert not starved(before, Sample(cpu_s=1.0, wait_s=2.5), 10.0)


def test_a_plan_starving_under_sched_idle_is_made_again_at_nice_10(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every core busy at normal priority (bounded hogs): the SCHED_IDLE worker gets
    nothing, is killed after a window or two, and the nice 10 one plans."""
    cores = len(os.sched_getaffinity(0))
    hog = "import time\nend = time.time() + 90\nwhile time.time() < end: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(cores)]

    def watched(dreams: Dreams) -> None:
        dreams.plan_in_process = WORKER
        assert dreams.plan_idle  # the default
        dreams.starve_window_s = 1.0

    try:
        with caplog.at_level("WARNING", logger="reverie.phases.service"):
            light_sleep_over_ten(tmp_path, watched)
    finally:
        for p in hogs:
            p.kill()
            p.wait()
    starvations = [r.getMessage() for r in caplog.records if "dream_plan_starved" in r.message]
    assert starvations == ["dream_plan_starved phase=light-sleep window_s=1 replan_nice=10"]
    assert "dream_plan_process_failed" not in caplog.text  # the worker planned, not a thread
