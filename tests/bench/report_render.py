"""Render BENCHMARKS.md and its plots from the results that tests/bench/report.py saved.

Kept apart from the runner so that it can be tested on a fixed results file
(tests/data/bench_results_sample.json) without running any benchmark.

A results file is JSON: {"machine": {...}, "quick": bool, "benchmarks": {name:
{"commands": [...], "started", "duration_s", "returncode", "loadavg_before",
"loadavg_after", "data": {...}, "error"}}}. The figures and their targets are
derived here, from "data", so that a changed target re-renders without a rerun.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLOT_DIR = Path("docs/bench")
LATENCY_PNG = "load_latency_vs_clients.png"
THROUGHPUT_PNG = "load_throughput_vs_clients.png"


@dataclass
class Target:
    op: str  # "<=", ">=", "<", ">", "=="
    value: float
    issue: int

    def met(self, value: float) -> bool:
        return {
            "<=": value <= self.value,
            ">=": value >= self.value,
            "<": value < self.value,
            ">": value > self.value,
            "==": value == self.value,
        }[self.op]

    def text(self, unit: str) -> str:
        sym = {"<=": "≤", ">=": "≥"}.get(self.op, self.op)
        return f"{sym} {fmt(self.value)}{unit} (issue {self.issue})"


@dataclass
class Figure:
    bench: str
    what: str
    value: float | None
    unit: str
    command: str
    target: Target | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        if self.target is None:
            return "-"
        return "met" if self.target.met(self.value) else "NOT MET"


def fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _cmd(bench: dict[str, Any], i: int = 0) -> str:
    cmds = bench.get("commands") or []
    return cmds[i] if i < len(cmds) else ""


# -- the figures, per benchmark ----------------------------------------------------------


def _search(name: str, b: dict[str, Any]) -> Iterator[Figure]:
    mode = b["data"].get("mode", name.split("_")[-1])
    n = b["data"].get("n", 0)
    at_100k = n >= 100_000
    allq = _get(b, "data", "styles", "all") or {}
    cmd = _cmd(b)
    tgt = Target("<=", 10, 3) if at_100k else None
    label = f"search p99, {mode}, {n:,} memories"
    note = "" if at_100k else "target applies at 100k"
    yield Figure(name, f"search p50, {mode}, {n:,} memories", allq.get("p50"), " ms", cmd)
    yield Figure(name, label, allq.get("p99"), " ms", cmd, tgt, note)
    ws = _get(b, "data", "styles", "workspace") or {}
    yield Figure(name, f"search p99 workspace-filtered, {mode}", ws.get("p99"), " ms", cmd)
    yield Figure(name, f"daemon CPU per search, {mode}", b["data"].get("cpu_ms"), " ms", cmd)
    yield Figure(name, f"source memory found, {mode}", allq.get("found"), " %", cmd)


def _startup(name: str, b: dict[str, Any]) -> Iterator[Figure]:
    d, cmd = b["data"], _cmd(b)
    big = d.get("n", 100_000) >= 100_000
    tgt = Target("<=", 3, 3) if big else None
    yield Figure(name, "start-up to READY=1 (median)", d.get("ready_s"), " s", cmd, tgt)
    yield Figure(name, "start-up to index loaded and caught up", d.get("indexed_s"), " s", cmd)
    yield Figure(name, "resident memory after load", d.get("rss_mib"), " MiB", cmd)


def _hook(name: str, b: dict[str, Any]) -> Iterator[Figure]:
    d, cmd = b["data"], _cmd(b)
    big = d.get("n", 100_000) >= 100_000  # the targets are stated at 100k memories

    def tgt(value: float) -> Target | None:
        return Target("<=", value, 4) if big else None

    note = "" if big else "target applies at 100k"
    yield Figure(
        name, "hook UserPromptSubmit median", d.get("prompt_p50"), " ms", cmd, tgt(60), note
    )
    yield Figure(name, "hook UserPromptSubmit p99", d.get("prompt_p99"), " ms", cmd, tgt(120), note)
    yield Figure(
        name, "hook median / bare interpreter median", d.get("ratio"), "x", cmd, tgt(3), note
    )
    yield Figure(name, "bare `python -I -c pass` median", d.get("bare_p50"), " ms", cmd)
    yield Figure(name, "hook PostToolUse median", d.get("post_p50"), " ms", cmd)


def _ingest(name: str, b: dict[str, Any]) -> Iterator[Figure]:
    cmd = _cmd(b)
    for kind, k in sorted((b["data"].get("kinds") or {}).items()):
        tgt = Target(">=", 20_000, 4) if kind == "session" else None
        yield Figure(name, f"events/s acknowledged, {kind}", k.get("per_s"), "/s", cmd, tgt)
        yield Figure(name, f"batch p99, {kind}", k.get("p99_ms"), " ms", cmd)


def _dream(name: str, b: dict[str, Any]) -> Iterator[Figure]:
    d, cmd = b["data"], _cmd(b)
    for n, r in sorted((d.get("sizes") or {}).items(), key=lambda kv: int(kv[0])):
        at_100k = int(n) >= 100_000
        tgt = Target("<=", 120, 5) if at_100k else None
        note = "" if at_100k else "target applies at 100k"
        yield Figure(
            name, f"full dream cycle, {int(n):,} memories", r.get("full_s"), " s", cmd, tgt, note
        )
        yield Figure(
            name, f"incremental cycle, {int(n):,} memories", r.get("incremental_s"), " s", cmd
        )


def _backup(name: str, b: dict[str, Any]) -> Iterator[Figure]:
    d, cmd = b["data"], _cmd(b)
    yield Figure(
        name, f"online backup, no writes ({fmt(d.get('mb'))} MB)", d.get("quiet_s"), " s", cmd
    )
    yield Figure(name, "online backup under writes", d.get("busy_s"), " s", cmd)
    yield Figure(name, "write p99 during the backup", d.get("busy_p99_ms"), " ms", cmd)
    yield Figure(name, "restore", d.get("restore_s"), " s", cmd)
    yield Figure(
        name, "start after restore until the index is ready", d.get("restart_s"), " s", cmd
    )


def _rpc(name: str, b: dict[str, Any]) -> Iterator[Figure]:
    d, cmd = b["data"], _cmd(b)
    yield Figure(
        name, "no-op round trip p50", d.get("ping_p50_us"), " µs", cmd, Target("<=", 200, 2)
    )
    for c, w in sorted((d.get("writes") or {}).items(), key=lambda kv: int(kv[0])):
        tgt = Target(">=", 5000, 2) if int(c) == 8 else None
        yield Figure(name, f"acknowledged writes/s, {c} client(s)", w.get("per_s"), "/s", cmd, tgt)


def _locomo(name: str, b: dict[str, Any]) -> Iterator[Figure]:
    d, cmd = b["data"], _cmd(b)
    full = d.get("questions_default", 0) >= 700  # the whole development half (760)
    note = "" if full else "subset: target applies to the whole dev half"
    yield Figure(
        name,
        "LoCoMo dev R@10, categories 1-4, default (hybrid, lexical embedder)",
        _get(d, "default", "recall@10"),
        "",
        cmd,
        Target(">=", 60, 3) if full else None,
        note,
    )
    yield Figure(
        name,
        "LoCoMo dev paper-compat R@5 (DRAGON: 56.7)",
        _get(d, "paper", "recall@5"),
        "",
        cmd,
        Target(">", 56.7, 3) if full else None,
        note,
    )
    yield Figure(name, "LoCoMo search p99, one at a time", d.get("search_p99_ms"), " ms", cmd)


def _load(name: str, b: dict[str, Any]) -> Iterator[Figure]:
    runs = b["data"].get("runs") or {}
    for c, r in sorted(runs.items(), key=lambda kv: int(kv[0])):
        cmd = _cmd(b, sorted(runs, key=int).index(c))
        ops = r.get("ops") or {}
        is64 = int(c) == 64
        big = b["data"].get("n", 100_000) >= 100_000
        for op, f in sorted(ops.items()):
            tgt = None
            if is64 and big and op == "remember":
                tgt = Target("<=", 20, 7)
            elif is64 and big and op == "search":
                tgt = Target("<=", 30, 7)
            note = "target applies at 100k" if is64 and not big and op != "post_events" else ""
            yield Figure(name, f"{c} clients: {op} p99", f.get("p99_ms"), " ms", cmd, tgt, note)
        errors = sum(int(f.get("errors", 0)) for f in ops.values())
        yield Figure(name, f"{c} clients: failed requests", errors, "", cmd, Target("==", 0, 7))
        rss = r.get("rss_mib") or {}
        yield Figure(
            name,
            f"{c} clients: daemon RSS max (start {fmt(rss.get('start'))})",
            rss.get("max"),
            " MiB",
            cmd,
        )


DERIVE: dict[str, Callable[[str, dict[str, Any]], Iterator[Figure]]] = {
    "search_lexical": _search,
    "search_hybrid": _search,
    "startup": _startup,
    "backup": _backup,
    "load": _load,
    "hook": _hook,
    "ingest": _ingest,
    "dream_cycle": _dream,
    "rpc": _rpc,
    "locomo": _locomo,
}


def figures(results: dict[str, Any]) -> list[Figure]:
    out: list[Figure] = []
    for name, b in results.get("benchmarks", {}).items():
        if name not in DERIVE:
            continue
        if b.get("error") or not b.get("data"):
            out.append(Figure(name, f"{name}: {b.get('error') or 'no data'}", None, "", _cmd(b)))
            continue
        out.extend(DERIVE[name](name, b))
    return out


# -- plots --------------------------------------------------------------------------------


def plot(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Latency percentiles and throughput per operation against the number of clients
    (bench_load's runs). Returns the PNGs written (none without load results)."""
    runs = _get(results, "benchmarks", "load", "data", "runs") or {}
    if not runs:
        return []
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    clients = sorted(runs, key=int)
    xs = [int(c) for c in clients]
    ops = sorted({op for c in clients for op in (runs[c].get("ops") or {})})
    out_dir.mkdir(parents=True, exist_ok=True)

    fig, axes = plt.subplots(1, len(ops), figsize=(4.5 * len(ops), 4), squeeze=False)
    for ax, op in zip(axes[0], ops, strict=True):
        for key, style in (("p50_ms", "o-"), ("p99_ms", "s-"), ("p999_ms", "^-")):
            ys = [_get(runs[c], "ops", op, key) for c in clients]
            ax.plot(xs, [math.nan if y is None else y for y in ys], style, label=key[:-3])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())  # 10, 20, not 10^1, 2x10^1
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_title(op)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("bench_load: latency per operation vs concurrency")
    fig.tight_layout()
    lat = out_dir / LATENCY_PNG
    fig.savefig(lat, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for op in ops:
        ys = [_get(runs[c], "ops", op, "per_s") for c in clients]
        ax.plot(xs, [math.nan if y is None else y for y in ys], "o-", label=op)
    total = [
        sum(float(f.get("per_s", 0)) for f in (runs[c].get("ops") or {}).values()) for c in clients
    ]
    ax.plot(xs, total, "k--", label="all")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests per second")
    ax.set_title("bench_load: throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    thr = out_dir / THROUGHPUT_PNG
    fig.savefig(thr, dpi=100)
    plt.close(fig)
    return [lat, thr]


# -- markdown -----------------------------------------------------------------------------


def _machine(m: dict[str, Any]) -> list[str]:
    rows = [
        ("CPU", m.get("cpu_model")),
        ("cores", m.get("cores")),
        ("RAM", f"{fmt(m.get('ram_gib'))} GiB" if m.get("ram_gib") else None),
        ("kernel", m.get("kernel")),
        ("Python", m.get("python")),
        ("SQLite (apsw)", f"{m.get('sqlite')} ({m.get('apsw')})"),
        ("hnswlib", m.get("hnswlib")),
        ("numpy", m.get("numpy")),
        ("commit", m.get("commit")),
        ("load average at start", m.get("loadavg_start")),
        ("load average at end", m.get("loadavg_end")),
        ("started", m.get("started")),
        ("finished", m.get("finished")),
    ]
    out = ["| machine | |", "|---|---|"]
    for k, v in rows:
        if isinstance(v, list):
            v = " / ".join(f"{x:.2f}" for x in v)
        out.append(f"| {k} | {v if v not in (None, '') else '-'} |")
    return out


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def markdown(results: dict[str, Any], pngs: list[str]) -> str:
    m = results.get("machine", {})
    figs = figures(results)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{results.get('command', 'python tests/bench/report.py')}` on "
        f"{str(m.get('finished') or m.get('started') or '')[:10]}. Every figure comes from a "
        "benchmark in `tests/bench/` that drives a real daemon over its socket; the command "
        "beside each figure reproduces it (run from the repository root). Targets are the "
        "issues' (`issues show N`). Each benchmark's section says when and at which commit "
        "it ran: `--only` reruns some and keeps the others' last figures.",
        "",
    ]
    if results.get("quick"):
        lines += [
            "**Quick run** (`--quick`): shortened benchmarks on a small store, a smoke check. "
            "Targets stated at 100k memories are not judged here.",
            "",
        ]
    lines += [
        "The machine may be shared: wall-clock percentiles move with other processes' load "
        "(the load average is given per benchmark), the daemon-CPU figures much less.",
        "",
        *_machine(m),
        "",
        "## Targets",
        "",
        "| figure | result | target | verdict | command |",
        "|---|---|---|---|---|",
    ]
    for f in figs:
        if f.target is None and f.value is not None:
            continue
        tgt = f.target.text(f.unit) if f.target else "-"
        verdict = f"{f.verdict} ({f.note})" if f.note and f.target is None else f.verdict
        lines.append(
            f"| {_cell(f.what)} | {fmt(f.value)}{f.unit if f.value is not None else ''} | "
            f"{_cell(tgt)} | {verdict} | `{_cell(f.command)}` |"
        )
    met = sum(f.verdict == "met" for f in figs)
    missed = sum(f.verdict == "NOT MET" for f in figs)
    lines += ["", f"Targets met: {met}; not met: {missed}.", "", "## All figures", ""]
    for name, b in results.get("benchmarks", {}).items():
        rows = [f for f in figs if f.bench == name]
        la, lb = b.get("loadavg_before"), b.get("loadavg_after")
        load = f", load average {la[0]:.1f} -> {lb[0]:.1f}" if la and lb else ""
        when = f"Run {b['started']}" if b.get("started") else "Run"
        when += f" at commit {b['commit']}" if b.get("commit") else " (commit not recorded)"
        lines += [
            f"### {name}",
            "",
            f"{when}: {fmt(b.get('duration_s'))} s wall{load}, exit {b.get('returncode')}.",
            "",
        ]
        for note in b.get("notes") or []:
            lines += [f"- {note}"]
        if b.get("notes"):
            lines.append("")
        lines += ["Commands:", "", "```", *(b.get("commands") or []), "```", ""]
        lines += ["| figure | result | target | verdict |", "|---|---|---|---|"]
        for f in rows:
            tgt = f.target.text(f.unit) if f.target else "-"
            val = f"{fmt(f.value)}{f.unit}" if f.value is not None else "-"
            verdict = f.verdict + (f" ({f.note})" if f.note else "")
            lines.append(f"| {_cell(f.what)} | {val} | {_cell(tgt)} | {verdict} |")
        lines.append("")
        if name == "load":
            lines += _load_table(b)
    if pngs:
        lines += ["## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in pngs]
        lines.append("")
    return "\n".join(lines)


def _load_table(b: dict[str, Any]) -> list[str]:
    runs = _get(b, "data", "runs") or {}
    out = [
        "| clients | operation | count | per s | p50 ms | p99 ms | p999 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in sorted(runs, key=int):
        for op, f in sorted((runs[c].get("ops") or {}).items()):
            out.append(
                f"| {c} | {op} | {f.get('count')} | {fmt(f.get('per_s'))} | "
                f"{fmt(f.get('p50_ms'))} | {fmt(f.get('p99_ms'))} | {fmt(f.get('p999_ms'))} | "
                f"{f.get('errors')} |"
            )
    out.append("")
    for c in sorted(runs, key=int):
        r = runs[c]
        dream = ", ".join(
            f"{phase} {d.get('status')} in {fmt(d.get('wall_s'))} s"
            for phase, d in (r.get("dream") or {}).items()
            if isinstance(d, dict)
        )
        load = _get(r, "machine", "load")
        extra = f"; load average {fmt(load)}" if load is not None else ""
        out.append(f"- {c} clients: dream during the load: {dream or 'none'}{extra}")
    return [*out, ""]


def render(results: dict[str, Any], out: Path, plots: bool = True) -> list[Path]:
    """Write `out` (markdown) and, with plots, the PNGs under out's folder/docs/bench.
    Returns the PNGs written."""
    pngs = plot(results, out.parent / PLOT_DIR) if plots else []
    rel = [str(p.relative_to(out.parent)) for p in pngs]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results, rel))
    return pngs
