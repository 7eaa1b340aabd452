"""Hook wall time: `reverie hook claude-code` for UserPromptSubmit at 100k memories.

    python tests/bench/bench_hook.py                  # 100k memories in /tmp/rv-hook-100k, 200 runs
    python tests/bench/bench_hook.py --n 1000000 --work /tmp/rv-hook-1m --runs 500

What a Claude Code user waits for on every prompt: from the hook process's
start to its exit, reading the payload, posting the event and searching the
memories relevant to the prompt (one pipelined round trip), printing the
hook JSON. Measured beside the bare interpreter, ``python -I -c pass``, in
the same run and interleaved (alternating which goes first), so that the
machine's load falls on both alike. Targets: median <= 3x the bare
interpreter and <= 60 ms; p99 <= 120 ms.

The store: tests/bench/bench_search.py's synthetic corpus of --n memories,
built once in --work/d-data with its builder (and rebuilt when the corpus
or the schema changes), the vector index built by the daemon on its first
start and saved. Its workspaces are renamed to the ids that
rpc/workspace.py gives a clone of each repository (``git:`` + remote), and
the hook runs in such a clone of the busiest workspace (~37k memories at
100k), so that its search is workspace-filtered over real volume, in the
daemon's default hybrid mode. Prompts are corpus.py questions about
memories of that workspace (a different one each run).

The hook runs as installed (`rpc/install_claude.py`): ``<python> -m reverie
hook claude-code``, with the bytecode cache on, as in any installed package
(this repository's environment sets PYTHONDONTWRITEBYTECODE=1; the bench
keeps the cache under --work with PYTHONPYCACHEPREFIX instead, and
``--no-bytecode-cache`` measures without it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import apsw
import bench_search
import corpus
import msgspec
from harness import Daemon, wait_indexed
from reverie.rpc import hook_claude
from reverie.rpc.install_claude import hook_command
from reverie.rpc.proto_events import Event, PostEvents
from reverie.rpc.protocol import Search
from reverie.store.database import DB_FILENAME

_json = msgspec.json.Encoder()
WORKSPACES = 12


def prepare_store(work: Path, n: int, seed: int) -> Path:
    """bench_search.py's store of n memories in work/d-data (built once, then reused),
    with each workspace renamed to the id a clone of its repository gets."""
    bench_search.prepare(work, n, seed, WORKSPACES)
    data = work / "d-data"
    conn = apsw.Connection(str(data / DB_FILENAME))
    try:
        # rpc/workspace.py names a clone by "git:" + its remote; the FTS
        # triggers do not watch this column, so the full-text index stays valid.
        conn.execute(
            "UPDATE memories SET workspace = 'git:' || workspace "
            "WHERE workspace NOT LIKE 'git:%' AND workspace NOT LIKE 'path:%'"
        )
    finally:
        conn.close()
    return data


def clone_of(root: Path, workspace: str) -> Path:
    """A git repository whose origin is the workspace's remote."""
    repo = root / "clone"
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        url = "https://" + workspace.removeprefix("git:") + ".git"
        subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", url], check=True)
    return repo


def busiest(data: Path) -> tuple[str, list[int]]:
    conn = apsw.Connection(str(data / DB_FILENAME), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        ws = conn.execute(
            "SELECT workspace FROM memories GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchall()[0][0]
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM memories WHERE workspace = ? ORDER BY id LIMIT 20000", (ws,)
            )
        ]
        return ws, ids
    finally:
        conn.close()


def prompts(data: Path, ids: list[int], count: int, seed: int) -> list[str]:
    """corpus.py questions about memories of the workspace (rare and common words)."""
    conn = apsw.Connection(str(data / DB_FILENAME), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        step = max(1, len(ids) // count)
        sources = []
        for mid in ids[::step][:count]:
            content, ws, at = conn.execute(
                "SELECT content, workspace, observed_at FROM memories WHERE id = ?", (mid,)
            ).fetchall()[0]
            sources.append(
                {
                    "content": content,
                    "workspace": ws,
                    "observed_at": dt.datetime.fromtimestamp(at, dt.UTC),
                    "metadata": {"synthetic": mid},
                }
            )
    finally:
        conn.close()
    out = [q["query"] for q in corpus.queries_for(sources, seed)]
    return [q if len(q) >= 8 else q + " — what do we know?" for q in out]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], stdin: bytes, env: dict[str, str]) -> tuple[float, bytes]:
    t = time.perf_counter()
    out = subprocess.run(cmd, input=stdin, capture_output=True, env=env, check=False)
    ms = 1000 * (time.perf_counter() - t)
    if out.returncode != 0 or out.stderr:
        sys.exit(f"{cmd} failed ({out.returncode}): {out.stderr!r}")
    return ms, out.stdout


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(name: str, values: list[float]) -> str:
    return (
        f"  {name:38} median {statistics.median(values):6.1f} ms  p90 {percentile(values, 90):6.1f}"
        f"  p99 {percentile(values, 99):6.1f}  max {max(values):6.1f}"
    )


def wait_idle(pid: int, timeout: float) -> None:
    """Until the daemon's background work after start (index saves and the
    like) is done: less than 2% CPU over a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < 0.02:
            return
    print(f"  (the daemon was still busy after {timeout:.0f} s)")


def hook_payload(repo: Path, work: Path, event: str, text: str, i: int) -> bytes:
    base = {
        "session_id": f"bench-{os.getpid()}",
        "transcript_path": str(work / "transcript.jsonl"),
        "cwd": str(repo),
        "permission_mode": "default",
        "hook_event_name": event,
    }
    if event == "UserPromptSubmit":
        return _json.encode({**base, "prompt": text})
    return _json.encode(
        {
            **base,
            "tool_name": "Bash",
            "tool_input": {"command": f"grep -rn '{text[:40]}' src", "description": "search"},
            "tool_response": {
                "stdout": f"src/app.py:{i}: {text}",
                "stderr": "",
                "interrupted": False,
            },
            "tool_use_id": f"toolu_bench_{os.getpid()}_{i}",
        }
    )


def run(args: argparse.Namespace) -> None:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_store(work, args.n, args.seed)
    workspace, ids = busiest(data)
    repo = clone_of(work, workspace)
    texts = prompts(data, ids, args.runs + args.warmup, args.seed)
    hook = hook_command().split()  # an absolute path without spaces here
    bare = [hook[0], "-I", "-c", "pass"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERIE_", "CLAUDE_"))}
    if args.bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    spool = work / "spool"
    t0 = time.perf_counter()
    with Daemon(work, env={"REVERIE_SPOOL_DIR": str(spool)}) as daemon, daemon.client() as c:
        assert daemon.proc is not None
        print(f"daemon ready in {time.perf_counter() - t0:.1f} s; waiting for the vector index")
        wait_indexed(c, timeout=args.index_timeout)
        deadline = time.monotonic() + args.index_timeout
        while getattr(c.status().index, "workspace_indexes_pending", 0):
            if time.monotonic() > deadline:
                sys.exit("the per-workspace vector indexes were not built in time")
            time.sleep(0.5)
        wait_idle(daemon.proc.pid, args.index_timeout)
        status = c.status()
        print(
            f"{status.memories.get('active', 0)} active memories, index {status.index}, "
            f"hook workspace {workspace}"
        )
        env.update(
            REVERIE_SOCKET=str(daemon.socket),
            REVERIE_SPOOL_DIR=str(spool),
            REVERIE_HOOK_LOG=str(work / "hook.log"),
            XDG_STATE_HOME=str(work / "state"),
        )
        for i in range(args.warmup):
            timed(bare, b"", env)
            timed(hook, hook_payload(repo, work, "UserPromptSubmit", texts[i], i), env)
            timed(hook, hook_payload(repo, work, "PostToolUse", texts[i], i), env)
        cpu0 = cpu_seconds(daemon.proc.pid)
        times: dict[str, list[float]] = {"bare": [], "prompt": [], "post": []}
        answered = 0
        for i in range(args.runs):
            k = args.warmup + i
            runs = [
                ("bare", bare, b""),
                ("prompt", hook, hook_payload(repo, work, "UserPromptSubmit", texts[k], k)),
                ("post", hook, hook_payload(repo, work, "PostToolUse", texts[k], k)),
            ]
            shift = i % 3  # each command goes first, second and third in turn
            for name, cmd, stdin in runs[shift:] + runs[:shift]:
                ms, out = timed(cmd, stdin, env)
                times[name].append(ms)
                if out:
                    msgspec.json.decode(out)  # valid hook JSON
                    answered += name == "prompt"
        cpu = cpu_seconds(daemon.proc.pid) - cpu0
        # The daemon's share: the same requests the prompt hook sends, from a warm client.
        daemon_ms = []
        for i in range(args.runs):
            request = hook_claude.query_for(
                {"hook_event_name": "UserPromptSubmit", "prompt": texts[i]}, workspace
            )
            assert request is not None
            search = Search(**{k: v for k, v in request.items() if k != "method"})
            event = Event(
                key=f"bench-warm-{os.getpid()}-{i}",
                harness="claude-code",
                type="UserPromptSubmit",
                workspace=workspace,
                payload={"prompt": texts[i]},
            )
            t = time.perf_counter()
            c.call_many([PostEvents(events=[event]), search])
            daemon_ms.append(1000 * (time.perf_counter() - t))
    spooled = len(list(spool.glob("*.jsonl"))) if spool.exists() else 0
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\nhook wall time, {args.runs} runs of each, interleaved "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"bytecode cache {'on' if args.bytecode_cache else 'off'}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}):"
    )
    print(line("python -I -c pass", times["bare"]))
    print(line("hook: UserPromptSubmit (post+search)", times["prompt"]))
    print(line("hook: PostToolUse (post only)", times["post"]))
    print(line("  the daemon's share, warm client", daemon_ms))
    ratio = med["prompt"] / med["bare"]
    print(
        f"  UserPromptSubmit / bare (medians) {ratio:.2f}x; {answered}/{args.runs} prompts got "
        f"memories; {spooled} events spooled; daemon CPU {1000 * cpu / args.runs:.2f} ms per "
        "prompt+post pair"
    )
    p99 = percentile(times["prompt"], 99)
    ok = ratio <= 3 and med["prompt"] <= 60 and p99 <= 120
    print(f"  targets (median <= 3x bare and <= 60 ms, p99 <= 120 ms): {'met' if ok else 'MISSED'}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=200, help="timed hook runs (and as many bare)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=100_000, help="memories in the store")
    ap.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/rv-hook-100k"),
        help="where the store is built (once) and the daemon runs",
    )
    ap.add_argument(
        "--no-bytecode-cache",
        dest="bytecode_cache",
        action="store_false",
        help="run the hook with PYTHONDONTWRITEBYTECODE=1 (compiles reverie's modules each run)",
    )
    ap.add_argument("--index-timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    run(args)


if __name__ == "__main__":
    main()
