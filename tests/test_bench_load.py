"""tests/bench/bench_load.py's summaries of where in a run the slow requests were
(on made-up latencies: no daemon, no load)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import bench_load


def test_the_slowest_percent_is_located_by_send_time() -> None:
    began = 1000.0
    # 300 requests over 30 s at 10 ms, three of them slow, sent at 4.2, 12.5 and 12.6 s.
    pairs = [(began + i * 0.1, 0.010) for i in range(300)]
    for at, sec in ((4.2, 0.050), (12.5, 0.040), (12.6, 0.045)):
        pairs[round(at * 10)] = (began + at, sec)
    assert bench_load._slowest_at(pairs, began) == [4.2, 12.5, 12.6]
    tenths = bench_load._by_tenth(pairs, began, 30.0)
    assert tenths[1] == 50.0 and tenths[4] == 45.0
    assert [t for i, t in enumerate(tenths) if i not in (1, 4)] == [10.0] * 8


def test_fewer_than_a_hundred_requests_still_name_the_slowest() -> None:
    pairs = [(10.0, 0.002), (11.5, 0.030), (12.0, 0.004)]
    assert bench_load._slowest_at(pairs, 10.0) == [1.5]
    assert bench_load._slowest_at([], 10.0) == []
