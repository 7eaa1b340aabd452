"""Metrics: counters, histograms and gauges of a real daemon, and their Prometheus form."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import threading
from collections import defaultdict

import pytest
import wire
from harness import Daemon, wait_indexed, wait_until
from reverie.daemon import metrics as daemon_metrics
from reverie.daemon.metrics import LATENCY_BOUNDS, Histogram, quantile
from reverie.errors import InvalidParams, NotFound
from reverie.rpc.proto_dreams import DreamsRun
from reverie.rpc.proto_metrics import Metrics, MetricsResult


def _metrics(d: Daemon) -> MetricsResult:
    with d.client() as c:
        m: MetricsResult = c.call(Metrics())
        return m


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in out.items() if v}


def test_requests_errors_and_latencies_are_counted_exactly(daemon: Daemon) -> None:
    # A search before the vector index is ready runs lexically (and is counted so).
    with daemon.client() as c:
        wait_indexed(c)
    before = _metrics(daemon)
    with daemon.client() as c:
        ids = [c.remember(f"metrics fact number {i}", kind="fact").id for i in range(3)]
        for _ in range(4):
            c.ping()
        c.search("metrics fact")
        c.search("number", mode="lexical")
        assert c.get(ids[0]).id == ids[0]
        with pytest.raises(NotFound):
            c.get(999_999)
        with pytest.raises(InvalidParams):
            c.search("x", limit=0)  # fails validation: never reaches the handler
        after: MetricsResult = c.call(Metrics())

    # The first `metrics` call is counted once it has answered; the last is not yet.
    assert _delta(after.requests, before.requests) == {
        "remember": 3,
        "ping": 4,
        "search": 2,
        "get": 2,
        "metrics": 1,
    }
    assert _delta(after.errors, before.errors) == {"not_found": 1, "invalid_params": 1}
    assert after.errors_by_method == {"get": {"not_found": 1}}
    # Every answered request is in its method's histogram.
    for method, n in after.requests.items():
        h = after.request_seconds[method]
        assert h.count == n == sum(h.counts)
        assert len(h.counts) == len(h.bounds) + 1 and h.sum > 0
    searches = {mode: h.count for mode, h in after.search_seconds.items()}
    assert searches.get("lexical") == 1 and sum(searches.values()) == 2
    # The writer's figures agree with each other: one observation per job / commit.
    assert after.write_seconds.count == after.writes >= 3
    assert after.commit_seconds.count == after.commits >= 1
    assert after.writes - before.writes >= 3
    g = after.gauges
    assert g.connections == 1 and g.in_flight == 1  # this very request
    assert g.writer_queue >= 0 and g.recall_buffer >= 0
    assert after.uptime_s > 0
    # The daemon's own background writes (the new index's save, the indexer's
    # vectors) go through the same queue: once they are done it reads 0.
    with daemon.client() as c:
        wait_until(lambda: c.call(Metrics()).gauges.writer_queue == 0, 10, "writer queue empty")


def test_status_carries_a_summary(daemon: Daemon) -> None:
    with daemon.client() as c:
        for _ in range(5):
            c.search("anything at all")
        with pytest.raises(NotFound):
            c.get(424_242)
        st = c.status()
    s = st.metrics
    assert s is not None
    assert s.requests >= 6 and s.errors == 1 and s.in_flight == 1
    assert s.search_p50_ms is not None and s.search_p99_ms is not None
    assert 0 < s.search_p50_ms <= s.search_p99_ms
    # The CLI's --json prints the same summary.
    out = _cli(daemon, "status", "--json")
    assert json.loads(out)["metrics"]["errors"] == 1


def test_phase_durations(daemon: Daemon) -> None:
    with daemon.client() as c:
        c.remember("something to dream about", kind="fact")
        report = c.call(DreamsRun(phase="light-sleep")).report
        c.call(DreamsRun(phase="light-sleep", dry_run=True))  # a plan is not a run
    m = _metrics(daemon)
    assert m.phase_runs == {"light-sleep": {report.status: 1}}
    h = m.phase_seconds["light-sleep"]
    assert h.count == 1 and math.isclose(h.sum, report.duration_ms / 1000)


def test_bad_frames_count_as_errors(daemon: Daemon) -> None:
    before = _metrics(daemon)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(daemon.socket))
        s.sendall(wire.HELLO)
        s.sendall(wire.frame(b"\xc1"))  # never valid msgpack
        s.sendall(wire.packed({"method": "no_such_method", "id": 2}))
        got: list[object] = []
        data = b""
        while len(got) < 3:
            data += s.recv(65536)
            got = list(wire.parse_replies(data))
    after = _metrics(daemon)
    assert _delta(after.errors, before.errors) == {"malformed": 1, "unknown_method": 1}
    assert _delta(after.requests, before.requests) == {"metrics": 1}  # bad frames are no requests


# -- Prometheus ---------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_prometheus(
    text: str,
) -> tuple[dict[str, str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """A strict little parser of the text format 0.0.4: (types, samples)."""
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, f"two HELP lines for {name}"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram"} and name in helps
            assert name not in types, f"two TYPE lines for {name}"
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, raw_labels, value = m.groups()
        labels: list[tuple[str, str]] = []
        if raw_labels:
            body = raw_labels[1:-1]
            pos = 0
            while pos < len(body):
                lm = _LABEL.match(body, pos)
                assert lm, f"bad labels: {raw_labels!r}"
                labels.append((lm.group(1), lm.group(2)))
                pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        family = family if types.get(family) == "histogram" else name
        assert family in types, f"sample {name} before its TYPE line"
        if types[family] == "counter":
            assert name.endswith("_total")
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return types, samples


def _cli(d: Daemon, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "reverie", *args, "--socket", str(d.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def test_prometheus_text_parses_and_matches_json(daemon: Daemon) -> None:
    with daemon.client() as c:
        for i in range(7):
            c.remember(f"prometheus fact {i}")
        c.search("prometheus")
        with pytest.raises(NotFound):
            c.get(31337)
    types, samples = parse_prometheus(_cli(daemon, "metrics", "--prometheus"))
    m = msgspec_json(_cli(daemon, "metrics", "--json"))
    assert types["reverie_request_duration_seconds"] == "histogram"
    assert types["reverie_requests_total"] == "counter"
    assert types["reverie_writer_queue"] == "gauge"

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert value("reverie_requests_total", method="remember") == 7
    assert value("reverie_errors_total", code="not_found") == 1
    assert value("reverie_request_errors_total", method="get", code="not_found") == 1
    # Histograms: cumulative buckets ending in +Inf, which equals _count.
    buckets: dict[tuple[str, frozenset[tuple[str, str]]], list[tuple[float, float]]]
    buckets = defaultdict(list)
    for (name, labels), v in samples.items():
        if name.endswith("_bucket"):
            le = dict(labels)["le"]
            rest = frozenset((k, x) for k, x in labels if k != "le")
            buckets[(name[: -len("_bucket")], rest)].append((float(le), v))
    assert buckets, "no histogram buckets"
    for (family, labels), series in buckets.items():
        series.sort()
        assert series[-1][0] == math.inf
        counts = [v for _, v in series]
        assert counts == sorted(counts), f"{family} buckets are not cumulative"
        assert samples[(family + "_count", labels)] == counts[-1]
        assert (family + "_sum", labels) in samples
    remember = [
        v
        for le, v in buckets[
            ("reverie_request_duration_seconds", frozenset({("method", "remember")}))
        ]
    ]
    assert remember[-1] == 7 and len(remember) == len(LATENCY_BOUNDS) + 1
    # The same figures as --json (taken just after: only the CLI's own call differs).
    assert m["requests"]["remember"] == 7
    assert value("reverie_writes_total") <= m["writes"]
    # The plain text form runs too.
    assert "requests by method" in _cli(daemon, "metrics")


def msgspec_json(text: str) -> dict[str, object]:
    out: dict[str, object] = json.loads(text)
    return out


# -- the primitives ---------------------------------------------------------------


def test_histogram_buckets_and_quantiles() -> None:
    h = Histogram()
    h.observe(LATENCY_BOUNDS[3])  # exactly on a bound: that bucket (le)
    h.observe(LATENCY_BOUNDS[3] * 1.01)
    h.observe(1e9)  # beyond every bound: +Inf
    h.observe(0.0)
    d = h.data()
    assert d.count == 4 and d.counts[0] == 1 and d.counts[3] == 1 and d.counts[4] == 1
    assert d.counts[-1] == 1
    assert quantile(d, 1.0) == LATENCY_BOUNDS[-1]
    q50 = quantile(d, 0.5)
    assert q50 is not None and LATENCY_BOUNDS[2] <= q50 <= LATENCY_BOUNDS[3]
    assert quantile(Histogram().data(), 0.5) is None


def test_quiet_is_no_request_being_handled() -> None:
    """The indexer's gaps (METRICS.wait_quiet): set at 0 requests in flight, and a
    thread waiting for one wakes when the last request leaves."""
    m = daemon_metrics.Metrics()
    assert m.wait_quiet(0)
    m.enter(short=False)  # a dream run over RPC, a backup: the gaps go on
    assert m.wait_quiet(0) and m.in_flight == 1
    m.leave(short=False)
    m.enter()
    m.enter()
    assert not m.wait_quiet(0.001)
    m.leave()
    assert not m.wait_quiet(0.001) and m.in_flight == 1
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(m.wait_quiet(60)))
    waiter.start()
    m.leave()
    waiter.join(timeout=60)
    assert woke == [True] and m.in_flight == 0
