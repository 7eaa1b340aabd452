"""`reverie metrics`: the daemon's counters and histograms, as text, JSON or Prometheus.

The Prometheus form is the text exposition format 0.0.4, for a node
exporter's textfile collector or a scrape through a small wrapper (the
daemon speaks only its own socket protocol).
"""

from __future__ import annotations

import argparse
import math

from reverie.daemon.metrics import quantile
from reverie.rpc._cli_base import common, emit_json
from reverie.rpc.client import Client
from reverie.rpc.proto_metrics import HistogramData, Metrics, MetricsResult

PREFIX = "reverie_"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "metrics",
        help="show request, error, latency, phase and queue metrics",
        description="Counters, latency histograms and queue depths since the daemon started.",
    )
    common(p)
    p.add_argument(
        "--prometheus",
        action="store_true",
        help="print the Prometheus text exposition format (0.0.4)",
    )
    p.set_defaults(run=cmd_metrics)


def cmd_metrics(args: argparse.Namespace, client: Client) -> int:
    result: MetricsResult = client.call(Metrics())
    if args.json:
        emit_json(result)
    elif args.prometheus:
        print(prometheus(result), end="")
    else:
        print(text(result))
    return 0


# -- text -------------------------------------------------------------------------


def _ms(h: HistogramData, q: float) -> str:
    v = quantile(h, q)
    return "-" if v is None else f"{v * 1000:.2f}"


def _row(label: str, h: HistogramData) -> str:
    mean = f"{h.sum / h.count * 1000:.2f}" if h.count else "-"
    return f"  {label:<22} {h.count:>9} {mean:>9} {_ms(h, 0.5):>9} {_ms(h, 0.99):>9}"


def text(m: MetricsResult) -> str:
    g = m.gauges
    head = f"  {'':<22} {'count':>9} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9}"
    lines = [
        f"up {m.uptime_s:.0f}s; quantiles are estimated from doubling buckets",
        f"queues: connections {g.connections}, in flight {g.in_flight}, "
        f"writer queue {g.writer_queue}, recall buffer {g.recall_buffer}, "
        f"index pending {g.index_pending} ({g.index_vectors} vectors)",
        f"writes {m.writes} in {m.commits} commits",
        "requests by method:",
        head,
    ]
    lines += [_row(name, h) for name, h in m.request_seconds.items()]
    if m.search_seconds:
        lines += ["search by mode:", head]
        lines += [_row(mode, h) for mode, h in m.search_seconds.items()]
    lines += ["writer:", head, _row("write (queued→commit)", m.write_seconds)]
    lines.append(_row("commit (group)", m.commit_seconds))
    if m.phase_seconds:
        lines += ["dream phases:", head]
        lines += [_row(phase, h) for phase, h in m.phase_seconds.items()]
    errors = ", ".join(f"{code}={n}" for code, n in m.errors.items()) or "none"
    lines.append(f"errors: {errors}")
    return "\n".join(lines)


# -- Prometheus ---------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: dict[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf"
    return repr(float(v)) if isinstance(v, float) else str(v)


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> str:
        full = PREFIX + name
        self.lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}"]
        return full

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_num(value)}")

    def histogram(self, name: str, labels: dict[str, str], h: HistogramData) -> None:
        cumulative = 0
        for bound, n in zip([*h.bounds, math.inf], h.counts, strict=True):
            cumulative += n
            le = "+Inf" if math.isinf(bound) else repr(float(bound))
            self.sample(f"{name}_bucket", {**labels, "le": le}, cumulative)
        self.sample(f"{name}_sum", labels, float(h.sum))
        self.sample(f"{name}_count", labels, h.count)


def prometheus(m: MetricsResult) -> str:
    out = _Out()
    name = out.family("uptime_seconds", "gauge", "Seconds since the daemon started.")
    out.sample(name, {}, float(m.uptime_s))
    name = out.family("requests_total", "counter", "Requests answered, by method.")
    for method, n in m.requests.items():
        out.sample(name, {"method": method}, n)
    name = out.family("errors_total", "counter", "Error answers, by error code.")
    for code, n in m.errors.items():
        out.sample(name, {"code": code}, n)
    name = out.family(
        "request_errors_total", "counter", "Requests answered with an error, by method and code."
    )
    for method, codes in m.errors_by_method.items():
        for code, n in codes.items():
            out.sample(name, {"method": method, "code": code}, n)
    name = out.family(
        "request_duration_seconds", "histogram", "Time to handle a request, by method."
    )
    for method, h in m.request_seconds.items():
        out.histogram(name, {"method": method}, h)
    name = out.family(
        "search_duration_seconds", "histogram", "Search time, by the mode actually used."
    )
    for mode, h in m.search_seconds.items():
        out.histogram(name, {"mode": mode}, h)
    name = out.family(
        "write_duration_seconds", "histogram", "A write job from submission to its commit."
    )
    out.histogram(name, {}, m.write_seconds)
    name = out.family(
        "commit_duration_seconds", "histogram", "One group-commit transaction, fsync included."
    )
    out.histogram(name, {}, m.commit_seconds)
    name = out.family("commits_total", "counter", "Group commits by the writer thread.")
    out.sample(name, {}, m.commits)
    name = out.family("writes_total", "counter", "Write jobs carried by the group commits.")
    out.sample(name, {}, m.writes)
    name = out.family("phase_duration_seconds", "histogram", "Dream phase runs, by phase.")
    for phase, h in m.phase_seconds.items():
        out.histogram(name, {"phase": phase}, h)
    name = out.family("phase_runs_total", "counter", "Dream phase runs, by phase and status.")
    for phase, runs in m.phase_runs.items():
        for status, n in runs.items():
            out.sample(name, {"phase": phase, "status": status}, n)
    g = m.gauges
    for field, help_text in (
        ("connections", "Clients connected."),
        ("in_flight", "Requests being answered."),
        ("writer_queue", "Write jobs waiting for the writer thread."),
        ("recall_buffer", "Searches whose recalls are not yet written."),
        ("index_pending", "Changes not yet in the vector index."),
        ("index_vectors", "Vectors in the index."),
    ):
        name = out.family(field, "gauge", help_text)
        out.sample(name, {}, getattr(g, field))
    return "\n".join(out.lines) + "\n"
