"""Brief and sitrep latency through the real daemon, on a large workspace.

    python tests/bench/bench_brief.py                          # 100k memories, one workspace
    python tests/bench/bench_brief.py --keep /tmp/rv-brief     # built once, reused

The store is built as tests/bench/bench_search.py builds it (its corpus, in
one workspace unless --workspaces says otherwise, so the briefing's queries
run over every memory), then a daemon starts on it (lexical search, no vector
index) and the bench adds a world state of 6,000 characters, 20 sessions (10
ended with summaries) and 20 claims. Measured over the socket, one request at
a time after a warm-up: `brief` without a prompt (the standing memories:
long-term by importance and recall, then short-term), `brief` with a prompt
(the hybrid search), and `sitrep`. Printed: p50/p90/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_search
import corpus
from harness import Daemon
from reverie.rpc.client import Client
from reverie.rpc.proto_sessions import (
    Brief,
    Claim,
    SessionEnd,
    SessionStart,
    Sitrep,
    WorldSet,
)


def _ms(samples: list[float]) -> str:
    s = sorted(samples)
    q = statistics.quantiles(s, n=100)
    return f"p50 {q[49]:6.1f}  p90 {q[89]:6.1f}  p99 {q[98]:6.1f}  max {s[-1]:6.1f} ms"


def _populate(c: Client, ws: str) -> None:
    c.call(WorldSet(workspace=ws, content="# World\n" + "The build is green. " * 300))
    for i in range(20):
        desc = f"task {i}: " + "work " * 20
        sid = c.call(SessionStart(workspace=ws, description=desc)).session.id
        c.call(Claim(workspace=ws, resource=f"src/module{i}.py", session_id=sid))
        if i % 2:
            c.call(SessionEnd(session_id=sid, summary=f"finished task {i}: " + "done " * 50))


def _time(c: Client, requests: list[object], rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        req = requests[i % len(requests)]
        t0 = time.perf_counter()
        c.call(req)  # type: ignore[arg-type]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspaces", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--keep", type=Path, help="build the store here and reuse it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rv-", dir="/tmp") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        bench_search.prepare(root, args.n, args.seed, args.workspaces)
        ws = corpus.workspace_names(args.workspaces)[0]
        sources = bench_search.load_sources(root, corpus.query_sources(50, args.seed, args.n))
        prompts = [q["query"] for q in corpus.queries_for(sources, args.seed)]
        d = Daemon(root, config=bench_search.daemon_config("lexical", recalls=True))
        with d, d.client(timeout=120) as c:
            _populate(c, ws)
            plain = [Brief(workspace=ws)]
            focused = [Brief(workspace=ws, prompt=p) for p in prompts]
            sitrep = [Sitrep(workspace=ws)]
            for reqs in (plain, focused, sitrep):
                _time(c, reqs, 20)  # warm-up
            print(f"{args.n} memories, workspace {ws!r}, {args.rounds} requests each")
            print(f"brief, no prompt   {_ms(_time(c, plain, args.rounds))}")
            print(f"brief, prompt      {_ms(_time(c, focused, args.rounds))}")
            print(f"sitrep             {_ms(_time(c, sitrep, args.rounds))}")
            text = c.call(focused[0]).text
            print(f"(a brief: {len(text)} characters)")


if __name__ == "__main__":
    main()
