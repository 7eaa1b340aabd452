"""How long one vector-index save stalls the process's other threads (the GIL).

Loads a saved index (a copy: the save writes beside it), starts a thread that
ticks every 1 ms and records its largest gap, and saves the index with the
in-process write and with the forked-child write (index_file.start_write):

    python tests/bench/bench_save_stall.py --dir /tmp/copy-of-d-data/index --model lexical-v1-d384

Prints, for each mode, the save's wall time and the ticker's largest gap.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import threading
import time
from pathlib import Path

from reverie.store.vector_index import VectorIndex


class Ticker:
    def __init__(self) -> None:
        self.gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.gap = max(self.gap, now - last)
            last = now

    def __enter__(self) -> Ticker:
        self._thread.start()
        time.sleep(0.05)
        self.gap = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", type=Path, required=True, help="an index directory (a copy)")
    ap.add_argument("--model", default="lexical-v1-d384")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    index, header = VectorIndex.load(args.dir, args.model, args.dim)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = header.data.size / 1e6
    print(f"loaded {index.live_count} vectors, file {size:.0f} MB, RSS {rss:.0f} MiB")
    with tempfile.TemporaryDirectory(dir=args.dir.parent) as out:
        for fork in (False, True):
            index._params = dataclasses.replace(index.params, fork_save=fork)
            for _ in range(args.repeat):
                with Ticker() as t:
                    began = time.perf_counter()
                    index.save(Path(out), seq=header.seq)
                    took = time.perf_counter() - began
                mode = "fork" if fork else "in-process"
                gap = t.gap * 1000
                print(
                    f"{mode:10s} save {took * 1000:7.1f} ms   largest 1 ms-ticker gap {gap:7.1f} ms"
                )


if __name__ == "__main__":
    main()
