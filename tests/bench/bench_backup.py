"""Online backup and restore of a large database, with and without concurrent writes.

    python3 tests/bench/bench_backup.py SRC_DATA_DIR [--root /tmp/rv-bk]

SRC_DATA_DIR is copied first (never modified; it must not be in use). A real
daemon is started on the copy; the figures are the backup's wall time, its
size, and the latency of acknowledged writes posted while it runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Daemon
from reverie.rpc.proto_backup import Backup, BackupResult


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("--root", type=Path, default=Path("/tmp/rv-bk"))
    args = ap.parse_args()
    shutil.rmtree(args.root, ignore_errors=True)
    data = args.root / "d-data"
    data.mkdir(parents=True, mode=0o700)
    t = time.monotonic()
    for name in ("reverie.db", "reverie.db-wal"):
        if (args.src / name).exists():
            shutil.copyfile(args.src / name, data / name)
    if (args.src / "index").is_dir():
        shutil.copytree(args.src / "index", data / "index")
    print(f"copied {args.src} in {time.monotonic() - t:.1f}s")
    d = Daemon(args.root)
    t = time.monotonic()
    d.start()
    print(f"daemon ready in {time.monotonic() - t:.1f}s")
    try:
        with d.client(timeout=None) as c:
            t = time.monotonic()
            r: BackupResult = c.call(Backup(path=str(args.root / "quiet.db")))
            quiet = time.monotonic() - t
        print(
            f"backup, no writes: {quiet:.2f}s wall ({r.duration_ms} ms in the daemon), "
            f"{r.memories} memories, {r.bytes / 1e6:.0f} MB, {r.pages} pages, "
            f"{r.bytes / 1e6 / quiet:.0f} MB/s, index included: {r.index_included} "
            f"(seq {r.index_seq}, snapshot seq {r.seq})"
        )
        lat: list[float] = []
        stop = threading.Event()

        def write() -> None:
            with d.client() as w:
                i = 0
                while not stop.is_set():
                    s = time.perf_counter()
                    w.remember(f"bench write during backup {i}")
                    lat.append(time.perf_counter() - s)
                    i += 1

        th = threading.Thread(target=write)
        th.start()
        time.sleep(1.0)
        base = len(lat)
        with d.client(timeout=None) as c:
            t = time.monotonic()
            r = c.call(Backup(path=str(args.root / "busy.db")))
            busy = time.monotonic() - t
        during = lat[base:]
        stop.set()
        th.join()
        q = statistics.quantiles(during, n=100) if len(during) > 2 else [0.0] * 99
        print(
            f"backup under writes: {busy:.2f}s wall, {len(during)} writes acknowledged meanwhile "
            f"({len(during) / busy:.0f}/s), write latency p50 {q[49] * 1e3:.1f} ms, "
            f"p99 {q[98] * 1e3:.1f} ms, max {max(during, default=0) * 1e3:.1f} ms; "
            f"index included: {r.index_included}"
        )
        before = lat[:base]
        if len(before) > 2:
            qb = statistics.quantiles(before, n=100)
            print(f"writes before the backup: p50 {qb[49] * 1e3:.1f} ms, p99 {qb[98] * 1e3:.1f} ms")
    finally:
        d.stop()
    t = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "reverie", "restore", str(args.root / "quiet.db"), "--force"],
        env=d.environ(),
        capture_output=True,
        text=True,
    )
    print(f"restore: {time.monotonic() - t:.2f}s (exit {out.returncode}) {out.stderr.strip()}")
    log_at = len(d.log())
    t = time.monotonic()
    d.start()
    with d.client() as c:
        while (ix := c.status().index) is not None and ix.phase != "ready":
            time.sleep(0.2)
    loaded = "vector index loaded" in d.log()[log_at:]
    print(
        f"start after restore until the index is ready: {time.monotonic() - t:.1f}s "
        f"({'loaded FILE.index' if loaded else 'rebuilt from SQLite'})"
    )
    d.stop()


if __name__ == "__main__":
    main()
