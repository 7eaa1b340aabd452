"""The plan worker's CPU priority: SCHED_IDLE, and the watch that gives it up if it starves.

A dream run's plan is background work: it should take only the CPU that
requests leave. `nice` 10 does not quite do that. A request's thread that
wakes on a core the plan holds waits until the plan's time slice ends
(the kernel protects a running task's slice), and every request crosses
several processes (client, daemon, search worker), so it waits several
times. Under bench_load.py's 64 clients the median search was 11.2-11.9
ms while a REM run planned at nice 10 (8.9-11.2 ms in the calm middle of
the run), p90 20.4-21.8 ms. Under SCHED_IDLE any normal task that wakes
takes the core at once: 10.2-10.8 ms, p90 17.2-17.9 (four runs each).

SCHED_IDLE's cost is that a plan gets almost nothing while the cores are
busy with anything else, and a plan holds its phase's lock. So the daemon
watches the worker: a worker that waited for a CPU most of a window
(WINDOW_S) and ran for less than STARVED_SHARE of it is starving. The
daemon kills it and plans again at nice 10 alone, the old way (an
unprivileged process cannot leave SCHED_IDLE: RLIMIT_NICE is 0 by
default). The watch reads /proc/PID/task/*/schedstat (time on a CPU, time
runnable and waiting); where that cannot be read, the plan runs at nice 10
alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

__all__ = ["NICENESS", "STARVED_SHARE", "WINDOW_S", "Sample", "lower", "sample", "starved"]

NICENESS = 10
WINDOW_S = 10.0
# Less than this share of a core over a window, while runnable for most of it.
STARVED_SHARE = 0.05
WAITING_SHARE = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """A process's CPU time and run-queue waiting time so far, all its threads."""

    cpu_s: float
    wait_s: float


def lower(*, idle: bool) -> None:
    """Lower this process's priority: nice NICENESS, and SCHED_IDLE if `idle`.

    Call before any thread starts (BLAS's threads inherit the policy)."""
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    if idle and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def sample(pid: int) -> Sample | None:
    """The process's Sample, or None if it is gone or /proc cannot tell."""
    cpu_ns = wait_ns = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        for task in tasks:
            fields = (task / "schedstat").read_text().split()
            cpu_ns += int(fields[0])
            wait_ns += int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    if not tasks:
        return None
    return Sample(cpu_s=cpu_ns / 1e9, wait_s=wait_ns / 1e9)


def observable() -> bool:
    """Whether SCHED_IDLE exists here and a worker's starvation can be seen."""
    return hasattr(os, "SCHED_IDLE") and sample(os.getpid()) is not None


def starved(before: Sample, after: Sample, window_s: float) -> bool:
    """Whether a process starved between two samples `window_s` apart: it waited
    for a CPU most of the window and hardly ran. (Waiting on the disk is not
    starving: it does not count as waiting for a CPU.)"""
    ran = after.cpu_s - before.cpu_s
    waited = after.wait_s - before.wait_s
    return ran < STARVED_SHARE * window_s and waited > WAITING_SHARE * window_s
