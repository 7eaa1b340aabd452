"""The daemon's metrics over RPC: counters, histograms and gauges (daemon/metrics.py).

Part of the protocol, which the hooks import on their hot path: msgspec and
the standard library only. Histograms cross the wire as their bucket upper
bounds (seconds) and per-bucket counts, not cumulative: `counts` has one
more entry than `bounds`, the last being the +Inf bucket.
"""

from __future__ import annotations

from msgspec import Struct
from reverie.rpc._base import _Request

# --- requests ----------------------------------------------------------------


class Metrics(_Request, tag="metrics"):
    """Every counter, histogram and gauge the daemon keeps."""


# --- results -----------------------------------------------------------------


class HistogramData(Struct, kw_only=True):
    bounds: list[float]  # bucket upper bounds in seconds, ascending
    counts: list[int]  # per bucket (not cumulative); the last is the +Inf bucket
    sum: float  # seconds
    count: int


class Gauges(Struct, kw_only=True):
    """Queue depths and sizes at the moment of the request."""

    connections: int  # clients connected
    in_flight: int  # requests being answered (the `metrics` request itself included)
    writer_queue: int  # write jobs waiting for the writer thread
    recall_buffer: int  # searches whose recalls are not yet written
    index_pending: int  # changes not yet in the vector index (0 when it is off)
    index_vectors: int


class MetricsResult(Struct, kw_only=True):
    uptime_s: float
    requests: dict[str, int]  # by method: requests answered (errors included)
    errors: dict[str, int]  # by error code: every error answer, also to bad frames
    errors_by_method: dict[str, dict[str, int]]  # method -> code -> count
    request_seconds: dict[str, HistogramData]  # by method: handling time (decode to encode)
    search_seconds: dict[str, HistogramData]  # by the mode actually used
    write_seconds: HistogramData  # one write job: queued until its group committed
    commit_seconds: HistogramData  # one group transaction, fsync included
    commits: int  # group commits
    writes: int  # write jobs they carried
    phase_seconds: dict[str, HistogramData]  # dream phase runs applied, by phase
    phase_runs: dict[str, dict[str, int]]  # phase -> status -> count
    gauges: Gauges


class MetricsSummary(Struct, kw_only=True):
    """The short form `status` carries. Quantiles are estimated from the buckets."""

    requests: int
    errors: int
    in_flight: int
    writer_queue: int
    request_p50_ms: float | None
    request_p99_ms: float | None
    search_p50_ms: float | None
    search_p99_ms: float | None
    write_p99_ms: float | None
