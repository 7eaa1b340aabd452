"""Benchmark the HNSW vector index: build rate, recall, query latency, save/load, memory.

    python tests/bench/bench_vector_index.py                   # 100k x 384
    python tests/bench/bench_vector_index.py --n 1000000       # 1M (about 1.7 GB of index)
    python tests/bench/bench_vector_index.py --filters         # one filtered index vs per-workspace

The vectors are random but clustered like sentence embeddings: 1000 cluster
centres, plus noise of rank 24 (topics within a cluster) and a little
isotropic noise, so that a query's nearest neighbour has a cosine similarity
of about 0.67 and its 10th about 0.60 (all-MiniLM-L6-v2 on related sentences
looks much like this). Queries are fresh draws from the same distribution,
not stored vectors. Recall is measured against exact brute force.

Load time and resident memory are measured in a fresh process, the way the
daemon starts: it loads the saved index (with its full checksum check) and
reports its RSS.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from reverie.store.vector_index import HnswParams, Neighbours, VectorIndex, build_index

Matrix = npt.NDArray[np.float32]
CLUSTERS = 1000
RANK = 24


def clustered(n: int, dim: int, seed: int) -> Matrix:
    """`n` unit vectors; every call shares the same clusters, `seed` picks the draws."""
    shared = np.random.default_rng(12345)
    centres = shared.standard_normal((CLUSTERS, dim), dtype=np.float32)
    topics = shared.standard_normal((RANK, dim), dtype=np.float32) / np.sqrt(RANK)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        rows = centres[rng.integers(CLUSTERS, size=m)]
        rows += 0.8 * (rng.standard_normal((m, RANK), dtype=np.float32) @ topics)
        rows += 0.6 * rng.standard_normal((m, dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start : start + m] = rows
    return out


def exact_top(data: Matrix, queries: Matrix, k: int, ids: npt.NDArray[np.int64]) -> list[set[int]]:
    """The true k nearest ids of each query (data rows are unit vectors)."""
    out: list[set[int]] = []
    step = max(1, 20_000_000 // max(1, len(data)))
    for s in range(0, len(queries), step):
        sims = queries[s : s + step] @ data.T
        top = np.argpartition(-sims, min(k, len(data) - 1), axis=1)[:, :k]
        out.extend(set(ids[row].tolist()) for row in top)
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) * 1e3


def timed_queries(
    search: Callable[[Matrix, int], Neighbours],
    queries: Matrix,
    k: int,
    truth: list[set[int]] | None,
) -> tuple[float, float, float]:
    """p50 ms, p99 ms, recall@k (NaN without truth)."""
    lat: list[float] = []
    hits = 0
    for i, q in enumerate(queries):
        t = time.perf_counter()
        found = search(q, k)
        lat.append(time.perf_counter() - t)
        if truth is not None:
            hits += len(truth[i] & set(found.ids.tolist()))
    recall = hits / (k * len(queries)) if truth is not None else float("nan")
    return pct(lat, 50), pct(lat, 99), recall


def batches(data: Matrix, size: int) -> Iterator[tuple[npt.NDArray[np.int64], Matrix]]:
    for s in range(0, len(data), size):
        yield np.arange(s, min(s + size, len(data)), dtype=np.int64), data[s : s + size]


def build(data: Matrix, params: HnswParams, label: str) -> VectorIndex:
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 10 or done == total:
            print(f"  {label}: {done}/{total}", flush=True)
            last[0] = now

    t = time.perf_counter()
    index = build_index(
        batches(data, 5000),
        dim=data.shape[1],
        model_id="bench",
        total=len(data),
        params=params,
        progress=progress,
    )
    took = time.perf_counter() - t
    print(f"build {label}: {len(data)} vectors in {took:.1f} s = {len(data) / took:.0f} vectors/s")
    return index


def bench_queries(index: VectorIndex, data: Matrix, queries: Matrix, efs: list[int]) -> None:
    ids = np.arange(len(data), dtype=np.int64)
    truth = {k: exact_top(data, queries, k, ids) for k in (10, 50)}
    print(f"queries: {len(queries)}, one thread, through VectorIndex.query (lock included)")
    for ef in efs:
        index.set_ef(ef)
        for k in (10, 50):
            p50, p99, recall = timed_queries(index.query, queries, k, truth[k])
            print(f"  ef={ef:<4} k={k:<3} p50 {p50:.3f} ms  p99 {p99:.3f} ms  ", end="")
            print(f"recall@{k} {recall:.4f}")


def searcher(
    index: VectorIndex, allowed: Callable[[int], bool], share: float | None, graph: bool = False
) -> Callable[[Matrix, int], Neighbours]:
    if graph:  # hnswlib's filtered search alone, without the post-filtering shortcut
        return lambda q, k: index._graph_filtered(q.reshape(1, -1), k, allowed)
    return lambda q, k: index.query(q, k, allowed, share=share)


def bench_filters(
    index: VectorIndex, data: Matrix, queries: Matrix, params: HnswParams, ef: int
) -> None:
    """One index with a filter vs one index per workspace vs an exact scan of the subset."""
    index.set_ef(ef)
    n = len(data)
    rng = np.random.default_rng(7)
    p50, p99, _ = timed_queries(index.query, queries, 10, None)
    print(f"filters (k=10, ef={ef}; p50/p99 ms, recall@10 against exact search of the subset):")
    print(f"  no filter:                        {p50:7.3f} {p99:7.3f}")
    for share in (0.50, 0.10, 0.01):
        members = np.sort(rng.choice(n, size=int(n * share), replace=False)).astype(np.int64)
        allowed = frozenset(members.tolist()).__contains__
        sub = data[members]
        truth = exact_top(sub, queries, 10, members)

        own = build_index(
            [(members, sub)], dim=data.shape[1], model_id="bench", total=len(members), params=params
        )
        own.set_ef(ef)
        rows = [
            ("hnswlib filter", searcher(index, allowed, None, graph=True)),
            ("query(allowed, share=s)", searcher(index, allowed, share)),
            ("query(allowed), no hint", searcher(index, allowed, None)),
            ("own index (per workspace)", own.query),
        ]
        for label, fn in rows:
            p50, p99, recall = timed_queries(fn, queries, 10, truth)
            print(f"  {share:>4.0%} {label:28s} {p50:7.3f} {p99:7.3f}  {recall:.4f}")
        lat = []
        for q in queries:
            t = time.perf_counter()
            sims = sub @ q
            np.argpartition(-sims, min(10, len(sub) - 1))[:10]
            lat.append(time.perf_counter() - t)
        p50, p99 = pct(lat, 50), pct(lat, 99)
        print(f"  {share:>4.0%} {'exact scan, vectors in RAM':28s} {p50:7.3f} {p99:7.3f}  1")


def bench_save_load(index: VectorIndex, directory: Path, dim: int, queries: Matrix) -> None:
    t = time.perf_counter()
    header = index.save(directory, seq=1)
    took = time.perf_counter() - t
    size = header.data.size + header.ids.size
    per = size / index.live_count
    print(f"save: {took:.2f} s, {size / 2**20:.1f} MiB ({per:.0f} bytes/vector)")
    np.save(directory / "queries.npy", queries[:200])
    out = subprocess.run(
        [sys.executable, __file__, "--load-only", str(directory), "--dim", str(dim)],
        check=True,
        capture_output=True,
        text=True,
    )
    print(out.stdout, end="")


def load_only(directory: Path, dim: int) -> None:
    base = rss_mb()
    t = time.perf_counter()
    index, header = VectorIndex.load(directory, "bench", dim)
    took = time.perf_counter() - t
    rss = rss_mb()
    queries = np.load(directory / "queries.npy")
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        index.query(q, 10)
        lat.append(time.perf_counter() - t0)
    print(
        f"load (fresh process, checksums verified): {took:.2f} s for {header.count} vectors; "
        f"RSS {rss:.0f} MiB ({rss - base:.0f} MiB over the {base:.0f} MiB interpreter+numpy); "
        f"first {len(queries)} queries p50 {pct(lat, 50):.3f} ms p99 {pct(lat, 99):.3f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="vectors (default 100000)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--m", type=int, default=HnswParams().m)
    ap.add_argument("--ef-construction", type=int, default=HnswParams().ef_construction)
    ap.add_argument("--ef", default="32,64,128", help="comma-separated ef values to try")
    ap.add_argument("--threads", type=int, default=2, help="build threads")
    ap.add_argument("--filters", action="store_true", help="measure filtered search")
    ap.add_argument("--dir", type=Path, help="where to save (default: a temporary directory)")
    ap.add_argument("--index", type=Path, help="load this saved index instead of building")
    ap.add_argument("--no-save", action="store_true", help="skip the save/load measurement")
    ap.add_argument("--load-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load_only:
        load_only(args.load_only, args.dim)
        return

    efs = [int(x) for x in args.ef.split(",")]
    params = HnswParams(m=args.m, ef_construction=args.ef_construction, threads=args.threads)
    print(f"n={args.n} dim={args.dim} {params} cpus={os.cpu_count()}")
    data = clustered(args.n, args.dim, seed=1)
    queries = clustered(args.queries, args.dim, seed=2)
    if args.index:  # reuse an index saved by an earlier run with the same --n and --dim
        index, _ = VectorIndex.load(args.index, "bench", args.dim, params=params)
        print(f"loaded {index.live_count} vectors from {args.index}")
    else:
        index = build(data, params, "index")
        print(f"RSS after build: {rss_mb():.0f} MiB (includes the {data.nbytes / 2**20:.0f} MiB)")
    bench_queries(index, data, queries, efs)
    if args.filters:
        bench_filters(index, data, queries, params, ef=HnswParams().ef)
    if args.no_save:
        return
    if args.dir:
        bench_save_load(index, args.dir, args.dim, queries)
    else:
        with tempfile.TemporaryDirectory(prefix="rv-bench-") as d:
            bench_save_load(index, Path(d), args.dim, queries)


if __name__ == "__main__":
    main()
