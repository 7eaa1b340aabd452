"""Event ingest: events acknowledged per second, posted in batches by several clients.

    python tests/bench/bench_ingest.py [--seconds 5] [--clients 4] [--batch 500]
        [--kind observations|session|log-only|all] [--no-index] [--synchronous FULL|NORMAL]

Starts a real daemon (synchronous=FULL: every acknowledged batch is
fsynced) and drives it over its Unix socket with `post_events` batches of
Claude Code-shaped events (the documented hook payloads, ~0.6 KB each).
"observations": PostToolUse and UserPromptSubmit events with distinct
content, so each new event also becomes a searchable observation memory
(redaction, FTS, dedup lookup). "session": a session's mix (a prompt, tool
calls as PreToolUse/PostToolUse pairs, the final message: 6 events in 10
make an observation). "log-only": PreToolUse events, appended to the log
only. Clients run in separate processes so that the client side's
GIL does not cap the figure. Target (issue 4): >= 20,000 events/s.

Besides events/s, which follows the CPU other processes leave free, each run
prints the daemon's CPU time per event (user and system, from /proc): the
figure to compare across runs on a shared machine.

With the vector index on (the default), the index yields to a burst (see
store/indexer.py: it catches up when writes pause, at the latest 10 s into a
burst), so the run then waits for the index to catch up and prints how long
that took after the last acknowledgement, and the daemon CPU per event
including the catch-up: the work the burst deferred.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Daemon, wait_indexed
from reverie.rpc.client import Client
from reverie.rpc.proto_events import Event, PostEvents, PostEventsResult

WORKSPACE = "git:github.com/example/shop"
COMMANDS = ["npm test", "pytest -x -q", "git status", "make build", "cargo check", "ls -la src"]
FILES = ["src/cart.py", "src/orders/api.py", "web/app.tsx", "README.md", "tests/test_cart.py"]


def _payload(kind: str, client: int, n: int) -> tuple[str, dict[str, Any]]:
    common = {
        "session_id": f"sess-{client}",
        "transcript_path": f"/home/u/.claude/projects/shop/sess-{client}.jsonl",
        "cwd": "/home/u/src/shop",
        "permission_mode": "default",
    }
    if kind == "session":
        # A Claude Code session's stream: a prompt, tool calls (each a
        # PreToolUse and a PostToolUse), the final message. 6 of 10 events
        # make an observation.
        step = n % 10
        if step == 0:
            return _payload("observations", client, n - n % 4)
        if step == 9:
            return "Stop", {
                **common,
                "hook_event_name": "Stop",
                "stop_hook_active": False,
                "last_assistant_message": f"Fixed the coupon check in {FILES[n % 5]} "
                f"(case {n}); all {n % 300} tests pass now.",
            }
        if step % 2 == 1:
            return _payload("log-only", client, n)
        return _payload("observations", client, n | 1)
    if kind == "log-only":
        return "PreToolUse", {
            **common,
            "hook_event_name": "PreToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": COMMANDS[n % len(COMMANDS)], "description": "Run it"},
            "tool_use_id": f"toolu_{client}_{n}",
        }
    if n % 4 == 0:
        return "UserPromptSubmit", {
            **common,
            "hook_event_name": "UserPromptSubmit",
            "prompt": f"client {client} asks ({n}): why does checkout fail for cart "
            f"{n * 7919 % 100003} when the coupon {n % 97} is applied twice?",
        }
    cmd = COMMANDS[n % len(COMMANDS)]
    return "PostToolUse", {
        **common,
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": f"{cmd} {FILES[n % len(FILES)]}", "description": "Check"},
        "tool_response": {
            "stdout": f"collected {n % 300} items\n"
            + "".join(f"{FILES[(n + i) % len(FILES)]} ok\n" for i in range(6))
            + f"{n % 7} failed, {n % 300} passed in {n % 13}.{n % 10}s (run {client}-{n})",
            "stderr": "",
            "interrupted": False,
            "isImage": False,
        },
        "tool_use_id": f"toolu_{client}_{n}",
    }


def _batches(kind: str, client: int, batch: int, count: int) -> list[list[Event]]:
    out = []
    n = 0
    for _ in range(count):
        events = []
        for _ in range(batch):
            etype, payload = _payload(kind, client, n)
            events.append(
                Event(
                    key=f"bench-{kind}-{client}-{n}",
                    harness="claude-code",
                    type=etype,
                    workspace=WORKSPACE,
                    session_id=f"sess-{client}",
                    payload=payload,
                )
            )
            n += 1
        out.append(events)
    return out


def _client(
    sock: str, kind: str, client: int, batch: int, seconds: float, ready: Any, q: Any
) -> None:
    # Prepared ahead, so the timed loop measures the daemon, not payload building.
    batches = _batches(kind, client, batch, max(4, int(seconds * 40_000 / batch) + 1))
    acked = observations = 0
    lat: list[float] = []
    with Client(sock, timeout=120) as c:
        # Every client starts when all are ready: building batches on a busy
        # machine takes a while, and must not overlap another client's run.
        ready.wait()
        deadline = time.monotonic() + seconds
        for events in batches:
            if time.monotonic() >= deadline:
                break
            t = time.perf_counter()
            res: PostEventsResult = c.call(PostEvents(events=events))
            lat.append(time.perf_counter() - t)
            acked += res.stored
            observations += res.observations
        elapsed = seconds - max(0.0, deadline - time.monotonic())
    q.put((acked, observations, elapsed, lat))


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds the process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run(
    sock: str, pid: int, kind: str, clients: int, batch: int, seconds: float, index: bool = True
) -> None:
    q: Any = mp.Queue()
    ready = mp.Barrier(clients + 1)
    procs = [
        mp.Process(target=_client, args=(sock, kind, n, batch, seconds, ready, q))
        for n in range(clients)
    ]
    for p in procs:
        p.start()
    ready.wait()
    user0, sys0 = cpu_times(pid)
    results = [q.get() for _ in procs]
    user1, sys1 = cpu_times(pid)
    burst_end = time.monotonic()
    user, system = user1 - user0, sys1 - sys0
    cpu = user + system
    for p in procs:
        p.join()
    acked = sum(r[0] for r in results)
    obs = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)
    lat = sorted(x for r in results for x in r[3])
    p50 = lat[len(lat) // 2] * 1e3 if lat else 0.0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3 if lat else 0.0
    print(
        f"{kind:>12}: {acked / elapsed:>9,.0f} events/s acknowledged "
        f"({acked:,} events, {obs:,} observations, {clients} clients x {batch}/batch, "
        f"{elapsed:.1f} s); batch p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
        f"daemon CPU {cpu / max(acked, 1) * 1e6:.1f} µs/event "
        f"(user {user / max(acked, 1) * 1e6:.1f}, system {system / max(acked, 1) * 1e6:.1f})"
    )
    if index:
        with Client(sock, timeout=120) as c:
            wait_indexed(c, timeout=300)
        lag = time.monotonic() - burst_end
        user2, sys2 = cpu_times(pid)
        total = user2 + sys2 - user0 - sys0
        print(
            f"{'':>12}  vector index caught up {lag:.1f} s after the burst; "
            f"daemon CPU including the catch-up {total / max(acked, 1) * 1e6:.1f} µs/event"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--kind", choices=["observations", "session", "log-only", "all"], default="all")
    ap.add_argument("--no-index", action="store_true", help="disable the vector index")
    ap.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, "
        f"python {platform.python_version()}, {platform.platform()}"
    )
    kinds = ["observations", "session", "log-only"] if args.kind == "all" else [args.kind]
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="rvi-", dir="/tmp") as tmp:
            config = f'[store]\nsynchronous = "{args.synchronous}"\n'
            if args.no_index:
                config += "[index]\nenabled = false\n"
            with Daemon(Path(tmp), config=config) as d:
                assert d.proc is not None
                run(
                    str(d.socket),
                    d.proc.pid,
                    kind,
                    args.clients,
                    args.batch,
                    args.seconds,
                    index=not args.no_index,
                )


if __name__ == "__main__":
    main()
