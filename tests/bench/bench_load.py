"""Load: many concurrent clients mixing writes, searches and event batches, while a dream runs.

    python tests/bench/bench_load.py                          # 64 clients, 30 s, 100k memories
    python tests/bench/bench_load.py --clients 16 --seconds 10 --json
    python tests/bench/bench_load.py --think-ms 0             # closed loop: saturate the daemon

The store is a copy of a kept 100k store (--source, default /tmp/rv-100k, as
built by `bench_search.py --keep /tmp/rv-100k`: the copy is made in a
temporary directory, the source is never touched), or, when the source does
not hold the corpus asked for (--n), one built with bench_search's
machinery in the temporary directory. A real daemon starts on it (hybrid
search, the vector index loaded or built first; dreams are not scheduled)
and C clients (--clients) run for --seconds, spread over several processes
so that the client side's GIL does not cap the figures (each process runs
its clients in threads; the socket calls release the GIL).

Each client repeats a fixed mix (--mix, default 4 remember : 4 search : 2
post_events), shuffled per client, with a think time between requests
(exponential, mean --think-ms, default 500 ms: an agent does other work
between calls, so 64 clients offer up to ~128 requests/s; with 0 every
client sends its next request as soon as the previous one is answered,
which measures saturation, not latency).
`remember` writes new corpus-style memories into the corpus' workspaces,
`search` runs hybrid searches made from memories of the store (the queries
of bench_search), `post_events` posts a batch of --batch Claude Code session
events (bench_ingest's payloads). Latency is measured by the client, from
send to answer. Two seconds into the run (or a tenth of it) the bench asks the
daemon, over RPC, for a light-sleep run and then a rem run, while the
clients go on; it waits at most --dream-wait seconds after the load for them
to finish. Before the load the daemon dreams (untimed) as a daemon that
has been running does: a light sleep, then REM until a run leaves nothing
for the next one (the first at 100k stops at its caps on pairs and cluster
summaries; the next ones take up the rest: three or four runs), so that the
runs during the load are the incremental ones of a settled daemon, over
what the load adds; --first-dream skips that, and the load meets the
store's first dream (at 100k, a light sleep re-marking every memory, and a
REM run comparing all of them).

Printed per operation: count, throughput, p50/p99/p999 latency, errors (any
failed request is an error, and the bench exits 1 if there is one); the
daemon's RSS sampled every second (start, max, end); the dream runs, and
each op's p50/p99 over the requests sent while a phase ran ("dreaming"); the
daemon's CPU seconds per request and the seconds its threads spent waiting
for a CPU (from /proc: on a shared machine the latencies follow the CPU
other processes leave, these two figures show how much that was). --json
prints the same figures as one JSON object on stdout (progress goes to
stderr): {"clients", "seconds", "ops": {name: {count, per_s, p50_ms, p99_ms,
p999_ms, errors, ...}}, "rss_mib": {start, max, end}, "dream": {...}, "daemon_side":
{handling, write_queue_to_commit, commit, ...} (the daemon's own metrics), "daemon":
{cpu_s, cpu_ms_per_request, cpu_wait_s}, ...}. --trace FILE writes every
request (seconds into the load when sent, op, latency in ms), sorted by send
time: where in the run the slowest requests fall (each op's "slowest_at_s"
says when its slowest 1% were sent).
Targets (issue 7), 64 clients at 100k: p99 write <= 20 ms, p99 search <= 30 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ingest
import bench_search
import corpus
from harness import Daemon
from reverie.daemon.metrics import quantile
from reverie.rpc.client import Client
from reverie.rpc.proto_dreams import DreamsRun, DreamsRunResult
from reverie.rpc.proto_events import PostEvents
from reverie.rpc.proto_metrics import HistogramData, Metrics, MetricsResult
from reverie.rpc.protocol import Remember, Search

OPS = ("remember", "search", "post_events")
SETUP_TIMEOUT = 600.0
_MAX_ERRORS_KEPT = 5


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# -- the store ------------------------------------------------------------------------------


def source_in_use(data: Path) -> bool:
    """Whether a daemon holds the data dir's lock (daemon/datadir.py), without taking it."""
    try:
        fd = os.open(data / "daemon.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def prepare_store(root: Path, args: argparse.Namespace) -> None:
    """root/d-data: a copy of the kept store when it holds the corpus asked for, else a new one."""
    recipe = {"n": args.n, "seed": 0, "workspaces": args.workspaces}
    marker = args.source / "corpus.json"
    kept = json.loads(marker.read_text()) if marker.exists() else {}
    if all(kept.get(k) == v for k, v in recipe.items()) and (args.source / "d-data").is_dir():
        t0 = time.perf_counter()
        # The copy, not the source, gets the daemon; the source is only read (as files:
        # even a read-only SQLite connection would write its -shm). A daemon running on
        # the source now could make the copy inconsistent: refuse then.
        src, dst = args.source / "d-data", root / "d-data"
        if source_in_use(src):
            sys.exit(f"a daemon is running on {src}: stop it, or give another --source")
        shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("*.lock"))
        # The copy (1.2 GB at 100k) sits dirty in the page cache; written back
        # during the load (dirty_expire: 30 s), it made every fsync of the
        # daemon's commits wait for hundreds of MB: write it out now.
        checkpoint(dst / "reverie.db")
        os.sync()
        say(f"copied {src} in {time.perf_counter() - t0:.1f} s")
    else:
        say(f"{args.source} does not hold {args.n} corpus memories: building them")
        bench_search.prepare(root, args.n, 0, args.workspaces)


def daemon_side(sock: str) -> dict[str, Any]:
    """What the daemon measured itself (its metrics, since start; estimated from
    histogram buckets): per op the handling time, and the writer's queue and commits.
    The client's latency minus the handling time is transport and the event loop."""
    with Client(sock, timeout=60) as c:
        m: MetricsResult = c.call(Metrics())

    def ms(h: HistogramData, q: float) -> float | None:
        v = quantile(h, q)
        return None if v is None else round(v * 1000, 2)

    handling = {
        op: {"p50_ms": ms(h, 0.5), "p99_ms": ms(h, 0.99)}
        for op, h in m.request_seconds.items()
        if op in OPS
    }
    return {
        "handling": handling,
        "write_queue_to_commit": {
            "p50_ms": ms(m.write_seconds, 0.5),
            "p99_ms": ms(m.write_seconds, 0.99),
        },
        "commit": {"p50_ms": ms(m.commit_seconds, 0.5), "p99_ms": ms(m.commit_seconds, 0.99)},
        "commits": m.commits,
        "writes": m.writes,
    }


def checkpoint(db: Path) -> None:
    """Fold the copy's WAL into the database, as a clean shutdown leaves it.

    The kept store's WAL may hold a build's last hundred MB: copied as is,
    the daemon's first checkpoint copied all of it during the load, a stall
    no running daemon meets (its checkpoints follow its own writes).
    """
    import apsw

    conn = apsw.Connection(str(db))
    try:
        conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
    finally:
        conn.close()


def daemon_config(args: argparse.Namespace) -> str:
    # The harness adds `[dreams] preset = "off"`: dreams run only when the bench asks.
    return (
        f"[daemon]\nmax_connections = {max(256, args.clients + 16)}\n"
        f'[search]\nmode = "hybrid"\nworkers = {args.search_workers}\n'
    )


# -- the clients ----------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Work:
    """What one process's clients send: prepared ahead, so that the timed loop measures
    the daemon and not the building of requests."""

    def __init__(self, args: argparse.Namespace, queries: list[dict[str, Any]], cid: int) -> None:
        self.cid = cid
        self.rng = random.Random(f"load/{cid}")
        mix = [op for op, w in zip(OPS, args.mix, strict=True) for _ in range(w)]
        self.rng.shuffle(mix)
        self.mix = mix
        # Enough for a client that never waits, at a generous 2,000 requests/s per client.
        per_op = max(8, min(3000, int(args.seconds * 2000 / max(1, args.clients))))
        self.memories = [
            Remember(
                content=f"{m['content']} (load client {cid}, #{i})",
                workspace=m["workspace"],
                kind=m["kind"],
                tags=m["tags"],
                importance=m["importance"],
            )
            for i, m in enumerate(corpus.generate(per_op, seed=1000 + cid))
        ]
        self.queries = [
            Search(query=q["query"], workspace=q["workspace"], limit=10, mode="hybrid")
            for q in self.rng.sample(queries, min(len(queries), per_op))
        ]
        # Batches are bigger: fewer distinct ones (a repeat is answered as a duplicate).
        batches = min(300, max(8, int(args.seconds * 200 / max(1, args.clients))))
        self.events = [
            PostEvents(events=b)
            for b in bench_ingest._batches("session", 10_000 + cid, args.batch, batches)
        ]

    def request(self, n: int) -> tuple[str, Any]:
        op = self.mix[n % len(self.mix)]
        k = n // len(self.mix)
        if op == "remember":
            return op, self.memories[k % len(self.memories)]
        if op == "search":
            return op, self.queries[k % len(self.queries)]
        return op, self.events[k % len(self.events)]


def _client_thread(
    sock: str, work: Work, start: float, stop: float, think: float, out: dict[str, Any]
) -> None:
    # (wall-clock send time, latency in s) per op: the send time tells whether a dream ran.
    lat: dict[str, list[tuple[float, float]]] = {op: [] for op in OPS}
    errors: dict[str, int] = dict.fromkeys(OPS, 0)
    messages: list[str] = []
    with Client(sock, timeout=120, name=f"load-{work.cid}") as c:
        now = time.time()
        if now < start:
            time.sleep(start - now)
        if think > 0:
            # A think time before the first request too: the clients' first
            # requests otherwise all arrive in the same millisecond (64 at once,
            # queued behind each other: 300 ms for the last, which alone made
            # the p99 of a 30 s run), a burst no set of agents makes. This is the
            # steady state of the same load (same rate, mix and think time).
            time.sleep(work.rng.expovariate(1 / think))
        n = 0
        while (sent := time.time()) < stop:
            op, req = work.request(n)
            n += 1
            t = time.perf_counter()
            try:
                c.call(req)
            except Exception as e:  # every failure is counted and reported
                errors[op] += 1
                if len(messages) < _MAX_ERRORS_KEPT:
                    messages.append(f"{op}: {type(e).__name__}: {e}")
                if isinstance(e, OSError):
                    break  # the connection is gone: this client stops
                continue
            lat[op].append((sent, time.perf_counter() - t))
            if think > 0:
                time.sleep(work.rng.expovariate(1 / think))
    out[str(work.cid)] = {"lat": lat, "errors": errors, "messages": messages}


def _client_process(
    sock: str,
    args: argparse.Namespace,
    queries: list[dict[str, Any]],
    cids: list[int],
    ready: Any,
    q: Any,
) -> None:
    works = [Work(args, queries, cid) for cid in cids]
    ready.wait()  # every process has built its requests
    start = time.time() + 0.5
    stop = start + args.seconds
    out: dict[str, Any] = {}
    threads = [
        threading.Thread(
            target=_client_thread, args=(sock, w, start, stop, args.think_ms / 1000, out)
        )
        for w in works
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.put(list(out.values()))


# -- the daemon's side ----------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_and_wait(pid: int) -> tuple[float, float]:
    """The daemon's CPU seconds (user + system) and the seconds its threads spent
    runnable but waiting for a CPU (schedstat): how much other processes held it back."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            wait += int((task / "schedstat").read_text().split()[1])
    return cpu, wait / 1e9


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.samples.append(rss_mib(self.pid))
            except OSError:
                return
            self.done.wait(1.0)


def dream(sock: str, delay: float, out: dict[str, Any], halt: threading.Event) -> None:
    """light-sleep, then rem, requested over RPC while the clients run (until `halt`)."""
    if halt.wait(delay):
        return
    with Client(sock, timeout=SETUP_TIMEOUT, name="load-dreams") as c:
        for phase in ("light-sleep", "rem"):
            if halt.is_set():
                return
            began = time.time()
            entry: dict[str, Any] = {"began": began}
            out[phase] = entry
            try:
                res: DreamsRunResult = c.call(DreamsRun(phase=phase))
                rep = res.report
                entry |= {
                    "status": rep.status if rep else "?",
                    "items": rep.items_processed if rep else 0,
                    "counts": rep.counts if rep else {},
                    "errors": rep.errors if rep else [],
                }
            except Exception as e:
                entry |= {"status": "error", "error": f"{type(e).__name__}: {e}"}
            entry["ended"] = time.time()


# -- the run ----------------------------------------------------------------------------------


def settle(c: Client, limit: int = 10) -> str:
    """A light sleep, then REM until a run leaves nothing for the next (at most `limit`)."""
    c.call(DreamsRun(phase="light-sleep"))
    for n in range(1, limit + 1):
        res: DreamsRunResult = c.call(DreamsRun(phase="rem"))
        if "left for the next run" not in res.report.notes:
            return f"light sleep and {n} REM runs"
    return f"light sleep and {limit} REM runs (REM still had work left)"


def run(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    prepare_store(root, args)
    indices = corpus.query_sources(args.queries, 0, args.n)
    queries = corpus.queries_for(bench_search.load_sources(root, indices), 0)
    daemon = Daemon(root, config=daemon_config(args)).start()
    unfinished: set[str] = set()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    try:
        with daemon.client(timeout=SETUP_TIMEOUT) as c:
            t0 = time.perf_counter()
            bench_search.wait_for_index(c, SETUP_TIMEOUT)
            say(f"daemon ready, vector index loaded in {time.perf_counter() - t0:.1f} s")
            if args.dream and not args.first_dream:
                t1 = time.perf_counter()
                done = settle(c)
                say(f"dreams settled before the load: {done} in {time.perf_counter() - t1:.1f} s")
                bench_search.wait_for_index(c, SETUP_TIMEOUT)
            # The search worker processes start on the first search: start them
            # now, so that the load measures a warm daemon (a one-off ~0.5 s
            # of CPU per worker, at the first search after a start).
            c.search("warm up", limit=1)
            time.sleep(2.0)
        sock = str(daemon.socket)
        procs_n = max(1, min(args.clients, args.procs))
        groups = [list(range(i, args.clients, procs_n)) for i in range(procs_n)]
        ready = mp.Barrier(procs_n + 1)
        q: Any = mp.Queue()
        procs = [
            mp.Process(target=_client_process, args=(sock, args, queries, g, ready, q))
            for g in groups
        ]
        for p in procs:
            p.start()
        ready.wait(SETUP_TIMEOUT)
        cpu0, wait0 = cpu_and_wait(pid)
        load_began = time.time() + 0.5  # when the clients start (see _client_process)
        sampler = RssSampler(pid)
        sampler.start()
        dreams: dict[str, Any] = {}
        delay = 0.5 + min(2.0, args.seconds / 10)
        halt = threading.Event()
        dreamer = threading.Thread(target=dream, args=(sock, delay, dreams, halt), daemon=True)
        if args.dream:
            dreamer.start()
        say(f"{args.clients} clients in {procs_n} processes, {args.seconds:g} s ...")
        results = [r for _ in procs for r in q.get(timeout=args.seconds + SETUP_TIMEOUT)]
        for p in procs:
            p.join()
        rss_end = rss_mib(pid)
        cpu1, wait1 = cpu_and_wait(pid)
        inside = daemon_side(sock)
        if args.dream:
            # Bounded: a phase still running is reported as such (stopping the daemon ends it).
            dreamer.join(timeout=args.dream_wait)
            halt.set()
        unfinished = {phase for phase, d in dreams.items() if "ended" not in d}
        sampler.done.set()
        sampler.join()
    finally:
        stop_began = time.perf_counter()
        try:
            code: int | str = daemon.stop(timeout=args.stop_timeout)
        except subprocess.TimeoutExpired:
            code = f"did not stop within {args.stop_timeout:g} s of SIGTERM: killed"
        stop_s = time.perf_counter() - stop_began
    windows = [(d["began"], d.get("ended", math.inf)) for d in dreams.values()]
    ops: dict[str, Any] = {}
    for op in OPS:
        pairs = [x for r in results for x in r["lat"][op]]
        lat = sorted(ms * 1000 for _, ms in pairs)
        dreaming = sorted(ms * 1000 for at, ms in pairs if any(b <= at < e for b, e in windows))
        ops[op] = {
            "count": len(lat),
            "per_s": round(len(lat) / args.seconds, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "p999_ms": round(percentile(lat, 99.9), 2),
            "max_ms": round(lat[-1] if lat else 0.0, 2),
            "errors": sum(r["errors"][op] for r in results),
            # The same figures for the requests sent while a dream phase ran.
            "dreaming": {
                "count": len(dreaming),
                "p50_ms": round(percentile(dreaming, 50), 2),
                "p99_ms": round(percentile(dreaming, 99), 2),
            },
            # p99 per tenth of the run (by send time): where in the run the tail is.
            "p99_by_tenth_ms": _by_tenth(pairs, load_began, args.seconds),
            # When the slowest 1% were sent (seconds into the load): a cluster is a stall.
            "slowest_at_s": _slowest_at(pairs, load_began),
        }
    if args.trace is not None:
        trace = sorted(
            (round(at - load_began, 4), op, round(ms * 1000, 3))
            for op in OPS
            for r in results
            for at, ms in r["lat"][op]
        )
        args.trace.write_text(json.dumps(trace))
    samples = sampler.samples or [rss_end]
    dream_out: dict[str, Any] = {}
    for phase in ("light-sleep", "rem") if args.dream else ():
        d = dict(dreams.get(phase, {"status": "not started when the load ended"}))
        if "began" in d:
            d["began_s"] = round(d.pop("began") - load_began, 2)
            ended = d.pop("ended", None)
            if ended is None or phase in unfinished:
                d = {
                    "began_s": d["began_s"],
                    "status": "still running when the bench stopped the daemon",
                }
            else:
                d["wall_s"] = round(ended - load_began - d["began_s"], 2)
        dream_out[phase] = d
    return {
        "clients": args.clients,
        "seconds": args.seconds,
        "n": args.n,
        "think_ms": args.think_ms,
        "mix": dict(zip(OPS, args.mix, strict=True)),
        "batch": args.batch,
        "search_workers": args.search_workers,
        "first_dream": args.first_dream,
        "ops": ops,
        "rss_mib": {
            "start": round(samples[0], 1),
            "max": round(max(samples), 1),
            "end": round(rss_end, 1),
        },
        "dream": dream_out,
        "daemon_side": inside,
        # Over the load (dream included): CPU per request, which other processes do not
        # inflate, and how long the daemon's threads waited for a CPU they could not get.
        "daemon": {
            "cpu_s": round(cpu1 - cpu0, 2),
            "cpu_ms_per_request": round(
                1000 * (cpu1 - cpu0) / max(1, sum(f["count"] for f in ops.values())), 2
            ),
            "cpu_wait_s": round(wait1 - wait0, 2),
        },
        "daemon_stop": {"exit": code, "seconds": round(stop_s, 1)},
        "error_messages": [m for r in results for m in r["messages"]],
        "machine": {
            "cpus": os.cpu_count(),
            "load": round(os.getloadavg()[0], 1),
            "python": platform.python_version(),
        },
    }


def _by_tenth(pairs: list[tuple[float, float]], began: float, seconds: float) -> list[float]:
    tenths: list[list[float]] = [[] for _ in range(10)]
    for at, sec in pairs:
        tenths[min(9, max(0, int(10 * (at - began) / seconds)))].append(sec * 1000)
    return [round(percentile(sorted(t), 99), 1) for t in tenths]


def _slowest_at(pairs: list[tuple[float, float]], began: float) -> list[float]:
    slowest = sorted(pairs, key=lambda p: -p[1])[: max(1, len(pairs) // 100)] if pairs else []
    return sorted(round(at - began, 1) for at, _ in slowest)


def show(res: dict[str, Any]) -> None:
    print(
        f"{res['clients']} clients, {res['seconds']:g} s, {res['n']} memories, think "
        f"{res['think_ms']:g} ms, mix {res['mix']}, {res['batch']} events/batch, "
        f"{res.get('search_workers', 0)} search workers "
        f"(machine: {res['machine']['cpus']} cpus, load {res['machine']['load']})"
    )
    print(f"  {'op':12} {'count':>7} {'per s':>8} {'p50':>9} {'p99':>9} {'p999':>9} {'errors':>6}")
    for op, f in res["ops"].items():
        print(
            f"  {op:12} {f['count']:7d} {f['per_s']:8.1f} {f['p50_ms']:7.2f}ms "
            f"{f['p99_ms']:7.2f}ms {f['p999_ms']:7.2f}ms {f['errors']:6d}"
        )
    r = res["rss_mib"]
    print(
        f"  daemon RSS: start {r['start']:.0f} MiB, max {r['max']:.0f} MiB, end {r['end']:.0f} MiB"
    )
    for op, f in res["ops"].items() if res["dream"] else ():
        d = f["dreaming"]
        print(
            f"  {op:12} while dreaming: {d['count']} requests, p50 {d['p50_ms']:.2f} ms, "
            f"p99 {d['p99_ms']:.2f} ms; max overall {f['max_ms']:.0f} ms"
        )
    for op, f in res["ops"].items():
        print(f"  {op:12} p99 per tenth of the run (ms): {f['p99_by_tenth_ms']}")
        print(f"  {op:12} the slowest 1% sent at (s): {f['slowest_at_s']}")
    for phase, d in res["dream"].items():
        print(f"  dream {phase}: {d}")
    print(f"  daemon CPU over the load: {res['daemon']}; stop: {res['daemon_stop']}")
    inside = res.get("daemon_side")
    if inside:
        print(f"  inside the daemon (its metrics): {inside}")
    for m in res["error_messages"]:
        print(f"  error: {m}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=64, help="concurrent clients")
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of the load")
    ap.add_argument("--n", type=int, default=100_000, help="memories in the store")
    ap.add_argument("--workspaces", type=int, default=12)
    ap.add_argument(
        "--source", type=Path, default=Path("/tmp/rv-100k"), help="kept store to copy (read only)"
    )
    ap.add_argument("--procs", type=int, default=8, help="client processes (at most --clients)")
    ap.add_argument(
        "--think-ms", type=float, default=500.0, help="mean pause between a client's requests"
    )
    ap.add_argument(
        "--mix",
        type=lambda s: [int(x) for x in s.split(":")],
        default=[4, 4, 2],
        help="remember:search:post_events proportions (default 4:4:2)",
    )
    ap.add_argument("--batch", type=int, default=50, help="events per post_events batch")
    ap.add_argument("--queries", type=int, default=2000, help="distinct search queries")
    ap.add_argument("--no-dream", dest="dream", action="store_false", help="no dream phase")
    ap.add_argument(
        "--first-dream",
        action="store_true",
        help="the load meets the store's first dream (default: a settled daemon's runs)",
    )
    ap.add_argument(
        "--search-workers",
        type=int,
        default=2,
        help="the daemon's [search] workers (0: searches run in the daemon's threads)",
    )
    ap.add_argument(
        "--dream-wait",
        type=float,
        default=30.0,
        help="seconds to wait, after the load, for the dream phases to finish",
    )
    ap.add_argument(
        "--stop-timeout", type=float, default=60.0, help="seconds to wait for the daemon to stop"
    )
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="write every request as JSON (seconds into the load, op, latency in ms)",
    )
    args = ap.parse_args(argv)
    if len(args.mix) != len(OPS) or sum(args.mix) <= 0 or min(args.mix) < 0:
        ap.error("--mix takes three non-negative proportions, e.g. 4:4:2")
    if not 1 <= args.clients <= 4096 or not 0 < args.seconds <= 3600:
        ap.error("--clients 1..4096 and --seconds 0..3600")
    # With --json, stdout holds the JSON only (the setup's progress goes to stderr).
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet, tempfile.TemporaryDirectory(prefix="rv-load-", dir="/tmp") as tmp:
        res = run(Path(tmp), args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        show(res)
    return 1 if any(f["errors"] for f in res["ops"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
