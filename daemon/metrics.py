"""Counters and histograms, cheap enough for the request hot path.

An observation is a few integer additions and one `bisect` over fixed
log-spaced bucket bounds: no locks, no allocation once a label has been seen.
That is safe without locks because every metric has exactly one thread that
writes it: the request, search and phase metrics (`METRICS`) are written on
the trio thread only, and the writer's histograms (store/writer.py holds its
own) on the writer thread only. A reader on another thread may see a value
one observation behind, never a torn one (the GIL makes each store atomic),
and counts are derived from the buckets so `_count` always equals the +Inf
bucket. Gauges (queue depths) are not observed at all: they are read when
someone asks (`collect`). One lock: the `quiet` event (no short request in
flight, for the indexer's pacing) is set and cleared when that count goes
between 0 and 1, not on every request.

`METRICS` is process-wide because a daemon is one process (tests start real
daemons as subprocesses); daemon/server.py, rpc/dispatch.py and
phases/service.py observe into it without being wired together.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from reverie.rpc._base import _Request
from reverie.rpc.proto_metrics import Gauges, HistogramData, MetricsResult, MetricsSummary

if TYPE_CHECKING:
    from reverie.store.database import Database
    from reverie.store.indexer import Indexer

# Latencies: 100 µs to 52 s, doubling (20 bounds and +Inf). Exact decimals so
# that the Prometheus `le` labels read well.
LATENCY_BOUNDS: tuple[float, ...] = tuple(round(0.0001 * 2**k, 7) for k in range(20))
# Dream phases run for seconds to many minutes: 10 ms to about 22 minutes.
PHASE_BOUNDS: tuple[float, ...] = tuple(round(0.01 * 2**k, 4) for k in range(18))


class Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: the first bound >= value, i.e. Prometheus' `le`.
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def data(self) -> HistogramData:
        counts = list(self.counts)  # one copy: count and buckets agree
        return HistogramData(
            bounds=list(self.bounds), counts=counts, sum=self.total, count=sum(counts)
        )


class _MethodStats:
    __slots__ = ("errors", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.latency = Histogram()
        self.errors: dict[str, int] = {}


class Metrics:
    """The trio thread's metrics (see the module docstring for the threading rule)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.in_flight = 0
        # Set while no short request is being handled: the vector indexer
        # inserts in those gaps (store/index_pacing.py). Changed only when
        # their count goes from 0 to 1 and back, not per request.
        self._short = 0
        self._quiet = threading.Event()
        self._quiet.set()
        # When a request was last answered: dreams pace themselves only while
        # clients are being served (phases/cancel.py).
        self.last_answer = 0.0
        # Keyed by request type: looking up a type is cheaper than naming it.
        self._methods: dict[type[_Request], tuple[str, _MethodStats]] = {}
        self.errors: dict[str, int] = {}
        self.search: dict[str, Histogram] = {}
        self.phases: dict[str, Histogram] = {}
        self.phase_runs: dict[str, dict[str, int]] = {}

    # -- observing (trio thread) -------------------------------------------------

    def request(self, kind: type[_Request], seconds: float, code: str | None) -> None:
        """One request answered in `seconds`; `code` is its error code, if any."""
        entry = self._methods.get(kind)
        if entry is None:
            name = str(kind.__struct_config__.tag)
            entry = self._methods[kind] = (name, _MethodStats())
        stats = entry[1]
        stats.requests += 1
        self.last_answer = time.monotonic()
        stats.latency.observe(seconds)
        if code is not None:
            stats.errors[code] = stats.errors.get(code, 0) + 1

    def enter(self, short: bool = True) -> None:
        """A request is being handled (trio thread); `short`: not one that runs
        for seconds (a dream run, a backup), which leaves the gaps to the indexer."""
        self.in_flight += 1
        if short:
            self._short += 1
            if self._short == 1:
                self._quiet.clear()

    def leave(self, short: bool = True) -> None:
        self.in_flight -= 1
        if short:
            self._short -= 1
            if self._short == 0:
                self._quiet.set()

    def wait_quiet(self, timeout_s: float) -> bool:
        """Wait (any thread) until no short request is being handled, at most `timeout_s`."""
        return self._quiet.wait(timeout_s)

    def serving(self, within_s: float = 1.0) -> bool:
        """Whether a request was answered in the last `within_s` seconds (any thread may ask)."""
        return time.monotonic() - self.last_answer < within_s

    def error(self, code: str) -> None:
        """Any error answer, whatever its path (bad frame, refusal, failed request)."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def searched(self, mode: str, seconds: float) -> None:
        hist = self.search.get(mode)
        if hist is None:
            hist = self.search[mode] = Histogram()
        hist.observe(seconds)

    def phase(self, phase: str, status: str, seconds: float) -> None:
        hist = self.phases.get(phase)
        if hist is None:
            hist = self.phases[phase] = Histogram(PHASE_BOUNDS)
        hist.observe(seconds)
        runs = self.phase_runs.setdefault(phase, {})
        runs[status] = runs.get(status, 0) + 1

    # -- reading --------------------------------------------------------------------

    def result(self, gauges: Gauges, writer: Any) -> MetricsResult:
        """Everything, as it crosses the wire; `writer` is store/writer.py's Writer."""
        methods = sorted(self._methods.values())
        return MetricsResult(
            uptime_s=round(time.monotonic() - self.started, 3),
            requests={name: s.requests for name, s in methods},
            errors=dict(sorted(self.errors.items())),
            errors_by_method={name: dict(s.errors) for name, s in methods if s.errors},
            request_seconds={name: s.latency.data() for name, s in methods},
            search_seconds={m: h.data() for m, h in sorted(self.search.items())},
            write_seconds=writer.write_latency.data(),
            commit_seconds=writer.commit_latency.data(),
            commits=writer.commits,
            writes=writer.jobs,
            phase_seconds={p: h.data() for p, h in sorted(self.phases.items())},
            phase_runs={p: dict(r) for p, r in sorted(self.phase_runs.items())},
            gauges=gauges,
        )

    def summary(self, gauges: Gauges, writer: Any) -> MetricsSummary:
        stats = [s for _, s in self._methods.values()]
        requests = _merge(s.latency for s in stats)
        search = _merge(self.search.values())
        return MetricsSummary(
            requests=sum(s.requests for s in stats),
            errors=sum(self.errors.values()),
            in_flight=gauges.in_flight,
            writer_queue=gauges.writer_queue,
            request_p50_ms=_ms(quantile(requests, 0.5)),
            request_p99_ms=_ms(quantile(requests, 0.99)),
            search_p50_ms=_ms(quantile(search, 0.5)),
            search_p99_ms=_ms(quantile(search, 0.99)),
            write_p99_ms=_ms(quantile(writer.write_latency.data(), 0.99)),
        )


METRICS = Metrics()


async def gauges(db: Database, indexer: Indexer | None, connections: Callable[[], int]) -> Gauges:
    """Queue depths now (read on the trio thread, where the daemon's state lives)."""
    pending = vectors = 0
    if indexer is not None and indexer.ready:
        pending = max(0, await db.max_seq() - indexer.indexed_seq)
        vectors = indexer.vectors
    return Gauges(
        connections=connections(),
        in_flight=METRICS.in_flight,
        writer_queue=db.writer.queued,
        # The database buffers searches' recalls and writes them when searches pause.
        recall_buffer=len(db._recalls),
        index_pending=pending,
        index_vectors=vectors,
    )


def _merge(hists: Iterable[Histogram]) -> HistogramData:
    """Histograms with the same bounds as one (all latency ones share LATENCY_BOUNDS)."""
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    total = 0.0
    for h in hists:
        for i, n in enumerate(h.counts):
            counts[i] += n
        total += h.total
    return HistogramData(bounds=list(LATENCY_BOUNDS), counts=counts, sum=total, count=sum(counts))


def quantile(h: HistogramData, q: float) -> float | None:
    """The q-quantile, interpolated inside its bucket as Prometheus' histogram_quantile does."""
    if h.count == 0:
        return None
    rank = q * h.count
    seen = 0
    for i, n in enumerate(h.counts):
        if n and seen + n >= rank:
            if i == len(h.bounds):  # the +Inf bucket: the last finite bound is all we know
                return h.bounds[-1]
            lower = h.bounds[i - 1] if i else 0.0
            return lower + (h.bounds[i] - lower) * (rank - seen) / n
        seen += n
    return h.bounds[-1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
