"""Foundation figures: acknowledged writes per second and no-op round trip.

    python tests/bench/bench_rpc.py [--seconds 5] [--pings 20000] [--clients 1,8]

Starts a real daemon (synchronous=FULL by default: every acknowledged write is fsynced)
on a temporary data dir and drives it over its Unix socket. Clients run in
separate processes so that the client side's GIL does not cap the figure.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Daemon
from reverie.rpc.client import Client


def _percentile(sorted_values: list[float], p: float) -> float:
    idx = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return sorted_values[idx]


def _writer(sock: str, n: int, seconds: float, start_at: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    with Client(sock) as c:
        while time.time() < start_at:
            time.sleep(0.001)
        deadline = time.monotonic() + seconds
        count, lat = 0, []
        while time.monotonic() < deadline:
            t = time.perf_counter()
            c.remember(f"client {n} note {count}: the build for module {count % 97} passed")
            lat.append(time.perf_counter() - t)
            count += 1
    q.put((count, lat))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_writes(sock: str, clients: int, seconds: float) -> dict[str, float]:
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 0.5
    procs = [
        mp.Process(target=_writer, args=(sock, n + clients * 1000, seconds, start_at, q))
        for n in range(clients)
    ]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    total = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    return {
        "writes_per_s": total / seconds,
        "p50_ms": _percentile(lat, 50) * 1e3,
        "p99_ms": _percentile(lat, 99) * 1e3,
    }


def bench_ping(sock: str, n: int) -> dict[str, float]:
    with Client(sock) as c:
        for _ in range(500):  # warm up
            c.ping()
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            c.ping()
            lat.append(time.perf_counter() - t)
    lat.sort()
    return {
        "p50_us": _percentile(lat, 50) * 1e6,
        "p99_us": _percentile(lat, 99) * 1e6,
        "mean_us": statistics.fmean(lat) * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pings", type=int, default=20000)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument(
        "--synchronous",
        default="FULL",
        choices=["FULL", "NORMAL"],
        help="FULL (durable, the default) or NORMAL (shows the cost of fsync)",
    )
    ap.add_argument("--no-index", action="store_true", help="disable the vector index")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, "
        f"python {platform.python_version()}, {platform.platform()}"
    )
    with tempfile.TemporaryDirectory(prefix="rvb-", dir="/tmp") as tmp:
        config = f'[store]\nsynchronous = "{args.synchronous}"\n'
        if args.no_index:
            config += "[index]\nenabled = false\n"
        with Daemon(Path(tmp), config=config) as d:
            sock = str(d.socket)
            assert d.proc is not None
            pid = d.proc.pid
            cpu0 = cpu_seconds(pid)
            p = bench_ping(sock, args.pings)
            cpu = (cpu_seconds(pid) - cpu0) / (args.pings + 500) * 1e6
            print(
                f"no-op round trip ({args.pings} pings, 1 client): "
                f"p50 {p['p50_us']:.0f} us  p99 {p['p99_us']:.0f} us  "
                f"mean {p['mean_us']:.0f} us  (daemon CPU {cpu:.0f} us/request)"
            )
            for n in (int(x) for x in args.clients.split(",")):
                cpu0 = cpu_seconds(pid)
                w = bench_writes(sock, n, args.seconds)
                cpu = (cpu_seconds(pid) - cpu0) / (w["writes_per_s"] * args.seconds) * 1e6
                print(
                    f"acknowledged writes, {n} client(s), synchronous={args.synchronous}: "
                    f"{w['writes_per_s']:.0f}/s  latency p50 {w['p50_ms']:.2f} ms "
                    f"p99 {w['p99_ms']:.2f} ms  (daemon CPU {cpu:.0f} us/write)"
                )
            with d.client() as c:
                st = c.status()
            print(f"stored {st.memories.get('active', 0)} memories, db {st.db_bytes / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
