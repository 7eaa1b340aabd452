"""Search latency through the real daemon at 100k (and 1M) synthetic memories.

    python tests/bench/bench_search.py                                   # 100k, temporary
    python tests/bench/bench_search.py --keep /tmp/rv-100k               # built once, reused
    python tests/bench/bench_search.py --n 1000000 --keep /tmp/rv-1m     # 1M (~2 min to build)
    python tests/bench/bench_search.py --keep /tmp/rv-100k --mode hybrid # with the vector index

The store is built without the daemon, the fastest way: tests/bench/corpus.py
memories written with reverie's own schema (so the FTS triggers, indexes and
column values are the daemon's) in transactions of 20k rows with
synchronous=OFF, then the full-text index is optimized, as deep sleep
does. With --keep DIR the data dir is DIR/d-data and is reused while it holds
the same corpus (--n, --seed, --workspaces, corpus.VERSION) and schema
(recorded in DIR/corpus.json).

Then a real daemon starts on it (in --mode lexical, the default, with the
vector index disabled so that building it does not compete; in hybrid or
vector mode the bench waits until the index is built, and --keep keeps it
too) and the queries of corpus.queries_for (rare words, common words only,
a named date, a workspace filter; about memories picked uniformly from the
corpus, read back from the store) are searched one at a time over the
socket, after a warm-up pass over other queries. Printed: p50/p90/p99/max
per query style and overall; how often the memory a query was made from is
in the results (a sanity check on quality); and the daemon's CPU time per
search, which other processes on a shared machine do not inflate.

With --in-process the daemon is left out: store/search.py's search() runs on
a reader connection and its CPU time is measured, beside an older version of
the module given with --baseline (same store, same queries), e.g.

    git show 6913265:store/search.py > /tmp/search_before.py
    python tests/bench/bench_search.py --keep /tmp/rv-100k --in-process \\
        --queries 400 --baseline /tmp/search_before.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus
import msgspec
from harness import Daemon
from reverie.rpc.client import Client
from reverie.store import memories, schema, search
from reverie.store.connection import open_connection
from reverie.store.database import DB_FILENAME

BATCH = 20_000
_json = msgspec.json.Encoder()
_INSERT = (
    "INSERT INTO memories (uid, workspace, kind, content, tags, importance, tier, created_at, "
    "observed_at, updated_at, content_hash, metadata, seq) "
    "VALUES (?, ?, ?, ?, ?, ?, 'short', ?, ?, ?, ?, ?, ?)"
)


def rows(n: int, seed: int, workspaces: int) -> Iterator[tuple[Any, ...]]:
    for i, m in enumerate(corpus.generate(n, seed, workspaces=workspaces)):
        at = m["observed_at"].timestamp()
        yield (
            f"{seed:08x}{i:024x}",
            m["workspace"],
            m["kind"],
            m["content"],
            _json.encode(m["tags"]).decode(),
            m["importance"],
            at,
            at,
            at,
            memories.content_hash(m["content"]),
            _json.encode(m["metadata"]).decode(),
            i + 1,
        )


def build(db: Path, n: int, seed: int, workspaces: int) -> None:
    """Write n corpus memories into a new database at `db`, with progress."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = open_connection(db, synchronous="OFF")
    try:
        schema.migrate(conn)
        conn.pragma("cache_size", -256_000)  # 256 MB: FTS5 segment merges stay in memory
        t0 = time.perf_counter()
        batch: list[tuple[Any, ...]] = []
        done = 0
        for row in rows(n, seed, workspaces):
            batch.append(row)
            if len(batch) == BATCH:
                done += _insert(conn, batch)
                rate = done / (time.perf_counter() - t0)
                print(f"  {done} memories, {rate:.0f}/s", end="\r", flush=True)
        done += _insert(conn, batch)
        insert_s = time.perf_counter() - t0
        print(f"  {done} memories in {insert_s:.0f} s ({done / insert_s:.0f}/s)")
        t1 = time.perf_counter()
        with conn:
            conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')")
        conn.execute("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE)")
        print(f"  fts optimize + analyze + checkpoint: {time.perf_counter() - t1:.0f} s")
    finally:
        conn.close()


def _insert(conn: Any, batch: list[tuple[Any, ...]]) -> int:
    with conn:
        conn.executemany(_INSERT, batch)
    count = len(batch)
    batch.clear()
    return count


def prepare(root: Path, n: int, seed: int, workspaces: int) -> None:
    """Make root/d-data hold the corpus (n, seed, workspaces), reusing it if it does."""
    # The text of the migrations that shape memories and their vectors (v1,
    # v2), not just the version: a store built before a change to one of them
    # is rebuilt. Later migrations add other tables; the daemon applies them.
    fingerprint = hashlib.sha256("".join(schema.MIGRATIONS[:2]).encode()).hexdigest()[:16]
    recipe = {
        "n": n,
        "seed": seed,
        "workspaces": workspaces,
        "corpus": corpus.VERSION,
        "schema": fingerprint,
    }
    marker = root / "corpus.json"
    data = root / "d-data"
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        print(f"reusing {data} ({n} memories)")
        return
    shutil.rmtree(data, ignore_errors=True)
    marker.unlink(missing_ok=True)
    print(f"building {n} memories in {data}")
    build(data / DB_FILENAME, n, seed, workspaces)
    marker.write_text(json.dumps(recipe))


def load_sources(root: Path, indices: list[int]) -> list[dict[str, Any]]:
    """The corpus memories with these indices, read back from the store (row id = index + 1)."""
    conn = open_connection(root / "d-data" / DB_FILENAME, readonly=True)
    try:
        out = []
        for i in indices:
            row = conn.execute(
                "SELECT content, workspace, observed_at FROM memories WHERE id = ?", (i + 1,)
            ).fetchone()
            assert row is not None, f"memory {i + 1} is missing: rebuild the store"
            content, ws, at = row
            out.append(
                {
                    "content": content,
                    "workspace": ws,
                    "observed_at": dt.datetime.fromtimestamp(at, dt.UTC),
                    "metadata": {"synthetic": i},
                }
            )
        return out
    finally:
        conn.close()


def daemon_config(mode: str, recalls: bool, workers: int | None = None) -> str:
    """Lexical mode runs without the vector index, so that its build does not compete
    with the searches measured. --no-recalls turns off the recording of every
    result (a write per search), to see its share of the latency; --search-workers
    sets the search worker processes (default: the daemon's)."""
    config = "[index]\nenabled = false\n" if mode == "lexical" else ""
    search = ("" if recalls else "record_recalls = false\n") + (
        "" if workers is None else f"workers = {workers}\n"
    )
    return config + (f"[search]\n{search}" if search else "")


def wait_for_index(client: Client, timeout: float) -> None:
    """Wait for the vector index (built from SQLite on the first start, then saved)."""
    t0 = time.perf_counter()
    while True:
        index = client.status().index
        phase = index.phase if index else "off"
        if phase == "ready" and index and index.pending == 0:
            if index.workspace_indexes_pending == 0:
                print(
                    f"vector index ready after {time.perf_counter() - t0:.0f} s "
                    f"({index.workspace_indexes} workspace indexes)"
                )
                return
            print(
                f"  workspace indexes: {index.workspace_indexes} built, "
                f"{index.workspace_indexes_pending} to build",
                end="\r",
            )
            time.sleep(2)
            continue
        if phase in ("failed", "off") or time.perf_counter() - t0 > timeout:
            sys.exit(f"vector index not ready ({phase}): {index}")
        print(
            f"  vector index {phase}: {index.done if index else 0}/{index.total if index else 0}",
            end="\r",
        )
        time.sleep(2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(
    client: Client, qs: list[dict[str, Any]], limit: int, mode: str
) -> list[tuple[float, bool]]:
    """(latency ms, source memory found) for each query, one at a time."""
    out = []
    for q in qs:
        t = time.perf_counter()
        res = client.search(q["query"], workspace=q["workspace"], limit=limit, mode=mode)
        ms = 1000 * (time.perf_counter() - t)
        found = any(h.memory.id == q["source"] + 1 for h in res.hits)
        out.append((ms, found))
    return out


def report(title: str, qs: list[dict[str, Any]], results: list[tuple[float, bool]]) -> None:
    print(f"\n{title}, {len(qs)} queries, one at a time:")
    print(f"  {'style':10} {'count':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  found")
    for style in (*corpus.STYLES, "all"):
        picked = [r for q, r in zip(qs, results, strict=True) if style in ("all", q["style"])]
        lat = [ms for ms, _ in picked]
        hit = sum(found for _, found in picked) / len(picked)
        print(
            f"  {style:10} {len(lat):5d} {percentile(lat, 50):6.2f}ms {percentile(lat, 90):6.2f}ms "
            f"{percentile(lat, 99):6.2f}ms {max(lat):6.1f}ms  {100 * hit:.0f}%"
        )


def load_module(path: Path) -> ModuleType:
    """Another version of store/search.py (e.g. `git show HEAD:store/search.py`)."""
    spec = importlib.util.spec_from_file_location("baseline_search", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_process(root: Path, qs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """store/search.py's search() on a reader connection, without the daemon: CPU time
    per search (thread time, which other processes do not inflate), beside a
    --baseline version of the module on the same connection and queries."""
    conn = open_connection(root / "d-data" / DB_FILENAME, readonly=True)
    versions: dict[str, Any] = {"current": search}
    if args.baseline:
        versions = {"baseline": load_module(args.baseline), **versions}
    warm, timed = qs[: args.warmup], qs[args.warmup :]
    found: dict[str, list[list[int]]] = {}
    for name, module in versions.items():
        for q in warm:
            module.search(conn, q["query"], workspace=q["workspace"], limit=args.limit)
        results = []
        for q in timed:
            t = time.thread_time()
            hits = module.search(conn, q["query"], workspace=q["workspace"], limit=args.limit)
            ms = 1000 * (time.thread_time() - t)
            ids = [h.memory.id for h in hits]
            results.append((ms, q["source"] + 1 in ids))
            found.setdefault(name, []).append(ids)
        report(f"[{name}] search() CPU time in-process, {args.n} memories", timed, results)
    if args.baseline:
        same = [
            len(set(a) & set(b)) / max(1, len(a))
            for a, b in zip(found["baseline"], found["current"], strict=True)
        ]
        print(f"\ntop-{args.limit} overlap with the baseline: {100 * sum(same) / len(same):.1f}%")
    conn.close()


def run(root: Path, args: argparse.Namespace) -> None:
    prepare(root, args.n, args.seed, args.workspaces)
    indices = corpus.query_sources(args.queries + args.warmup, args.seed, args.n)
    qs = corpus.queries_for(load_sources(root, indices), args.seed)
    if args.in_process:
        in_process(root, qs, args)
        return
    warm, timed = qs[: args.warmup], qs[args.warmup :]
    t0 = time.perf_counter()
    with (
        Daemon(root, config=daemon_config(args.mode, args.recalls, args.search_workers)) as daemon,
        daemon.client(timeout=120) as c,
    ):
        print(f"daemon ready in {time.perf_counter() - t0:.2f} s")
        assert daemon.proc is not None
        if args.mode != "lexical":
            wait_for_index(c, args.index_timeout)
        measure(c, warm, args.limit, args.mode)
        cpu0 = cpu_seconds(daemon.proc.pid)
        results = measure(c, timed, args.limit, args.mode)
        cpu = cpu_seconds(daemon.proc.pid) - cpu0
        rss = rss_mb(daemon.proc.pid)
    report(f"{args.mode} search latency over the socket, {args.n} memories", timed, results)
    print(
        f"daemon CPU {1000 * cpu / len(timed):.2f} ms per search (mean; immune to other "
        f"processes' load, unlike the wall-clock figures), RSS {rss:.0f} MB"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="memories in the store")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspaces", type=int, default=12)
    ap.add_argument("--queries", type=int, default=1000, help="timed queries")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--limit", type=int, default=10, help="results per search")
    ap.add_argument("--keep", type=Path, help="data dir parent to build once and reuse")
    ap.add_argument(
        "--mode",
        choices=["lexical", "hybrid", "vector"],
        default="lexical",
        help="search mode (lexical: the vector index is disabled)",
    )
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="time store/search.py's search() on a connection, without the daemon",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        help="with --in-process: another search.py to compare (same queries, same store)",
    )
    ap.add_argument(
        "--no-recalls",
        dest="recalls",
        action="store_false",
        help="do not record recalls (diagnostic: the daemon records every result by default)",
    )
    ap.add_argument(
        "--search-workers",
        type=int,
        help="the daemon's [search] workers (0: searches run in its threads)",
    )
    ap.add_argument(
        "--index-timeout", type=float, default=1800, help="seconds to wait for the vector index"
    )
    args = ap.parse_args(argv)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
        f"python {platform.python_version()}"
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args.keep, args)
    else:
        with tempfile.TemporaryDirectory(prefix="rv-bs-", dir="/tmp") as tmp:
            run(Path(tmp), args)


if __name__ == "__main__":
    main()
