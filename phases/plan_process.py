"""One run of a plan worker process (phases/plan_worker.py), from the daemon's side.

phases/service.py decides which command to run (under SCHED_IDLE first, then
at nice 10: phases/plan_priority.py) and falls back to planning in a thread
when a worker fails (PlanProcessFailed). Here: start the worker, hand it the
request, read its answer, kill it if the daemon stops or (watched) if it
starves.
"""

from __future__ import annotations

import msgspec
import trio
from reverie.errors import error_for_code
from reverie.phases import plan_priority, plan_worker
from reverie.phases.cancel import Cancelled
from reverie.phases.runner import Plan

__all__ = ["PlanProcessFailed", "answer_of", "run_worker"]


class PlanProcessFailed(Exception):
    """The plan worker could not answer (not a phase's error): plan in-process."""


async def run_worker(
    cmd: list[str],
    req: plan_worker.PlanRequest,
    stopping: trio.Event,
    *,
    watch_s: float | None = None,
) -> bytes | None:
    """What the worker printed; Cancelled once `stopping` is set (the worker is
    killed: it wrote nothing). With `watch_s`, its CPU is sampled every so many
    seconds, and None means it starved and was killed."""
    out: list[bytes] = []
    failed: PlanProcessFailed | None = None
    starved = False
    async with trio.open_nursery() as nursery:

        async def stop_on_shutdown() -> None:
            await stopping.wait()
            nursery.cancel_scope.cancel()

        async def run(task_status: trio.TaskStatus[trio.Process]) -> None:
            nonlocal failed
            done = await trio.run_process(
                cmd,
                stdin=msgspec.msgpack.encode(req),
                capture_stdout=True,
                check=False,
                task_status=task_status,
            )
            if done.returncode != 0:
                failed = PlanProcessFailed(f"the plan worker exited with {done.returncode}")
            out.append(done.stdout)
            nursery.cancel_scope.cancel()  # (errors are raised outside: not in a group)

        async def watch_for_starvation(pid: int, window_s: float) -> None:
            nonlocal starved
            before = plan_priority.sample(pid)
            while before is not None:
                await trio.sleep(window_s)
                after = plan_priority.sample(pid)
                if after is not None and plan_priority.starved(before, after, window_s):
                    starved = True
                    nursery.cancel_scope.cancel()  # kills the worker
                before = after

        nursery.start_soon(stop_on_shutdown)
        try:
            proc: trio.Process = await nursery.start(run)
        except OSError as e:
            failed = PlanProcessFailed(f"cannot start the plan worker: {e}")
            nursery.cancel_scope.cancel()
        else:
            if watch_s is not None:
                nursery.start_soon(watch_for_starvation, proc.pid, watch_s)
    if failed is not None:
        raise failed
    if out:
        return out[0]
    if starved:
        return None
    raise Cancelled("interrupted by shutdown")


def answer_of(out: bytes) -> Plan:
    """The plan in a plan worker's answer; its phase's error raised as such."""
    try:
        answer = msgspec.msgpack.decode(out, type=plan_worker.PlanAnswer)
    except msgspec.DecodeError as e:
        raise PlanProcessFailed(f"undecodable plan: {e}") from e
    if answer.failed is not None:
        raise error_for_code(answer.failed.code, answer.failed.message)
    if answer.plan is None:
        raise PlanProcessFailed("the plan worker answered nothing")
    return answer.plan
