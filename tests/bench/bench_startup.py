"""Start-up time to READY=1 and resident memory, on an existing data dir.

    python tests/bench/bench_search.py --keep /tmp/rv-100k       # builds a 100k store once
    python tests/bench/bench_startup.py --data-dir /tmp/rv-100k/d-data [--runs 5]

Each run starts the real daemon with a NOTIFY_SOCKET that this script
listens on, and times from exec to READY=1 (the socket accepts from then on).
It then waits until the vector index is loaded and caught up, and reads the
daemon's resident memory (VmRSS) and the index's state.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import wait_indexed
from reverie.rpc.client import Client


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_run(data_dir: Path, tmp: Path, n: int) -> tuple[float, float, float, str]:
    notify = tmp / f"notify-{n}.sock"
    sock_path = tmp / f"d-{n}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERIE_", "NOTIFY_"))}
    env.update(
        REVERIE_DATA_DIR=str(data_dir), REVERIE_SOCKET=str(sock_path), NOTIFY_SOCKET=str(notify)
    )
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reverie", "daemon"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while b"READY=1" not in listener.recv(4096):
            pass
        ready = time.perf_counter() - started
        with Client(sock_path) as c:
            wait_indexed(c, timeout=1800)
            indexed = time.perf_counter() - started
            st = c.status()
        ix = st.index
        summary = (
            f"{st.memories.get('active', 0)} memories, index {ix.phase if ix else 'off'} "
            f"{ix.vectors if ix else 0} vectors ({ix.model if ix else '-'})"
        )
        return ready, indexed, rss_mib(proc.pid), summary
    finally:
        proc.terminate()
        proc.wait(120)
        listener.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rvs-", dir="/tmp") as tmp:
        results = [one_run(args.data_dir, Path(tmp), n) for n in range(args.runs)]
    ready = sorted(r[0] for r in results)
    indexed = sorted(r[1] for r in results)
    print(results[-1][3])
    print(
        f"start-up to READY=1: median {statistics.median(ready):.2f} s, max {ready[-1]:.2f} s "
        f"({args.runs} runs)"
    )
    print(
        f"start-up to vector index loaded and caught up: median "
        f"{statistics.median(indexed):.2f} s, max {indexed[-1]:.2f} s"
    )
    print(f"resident memory after load: {statistics.median(r[2] for r in results):.0f} MiB")


if __name__ == "__main__":
    main()
