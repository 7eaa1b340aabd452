"""Run the benchmark set and write BENCHMARKS.md (figures, targets, machine, commands, plots).

    pip install matplotlib            # or: pip install '.[bench]'  (the plots)
    python tests/bench/report.py                      # everything, 20-30 min; BENCHMARKS.md at root
    python tests/bench/report.py --quick --out /tmp/bench-quick/BENCHMARKS.md   # smoke check
    python tests/bench/report.py --only search_hybrid,load        # some benchmarks
    python tests/bench/report.py --from-json /tmp/reverie-bench   # re-render saved results

Each benchmark runs as its own process, from the repository root, with the
command printed in the report beside its figures (rerun it to check one).
The benchmarks: search_lexical, search_hybrid (bench_search.py at 100k;
the store is kept in --store, default /tmp/rv-100k, and reused while it
holds the same corpus, else built: a few minutes, plus the vector index's
first build in hybrid mode), startup, backup and load (on that store),
hook, ingest, dream_cycle, rpc, locomo (the development half, default
configuration). Their human output is parsed (the regexes below fail loudly
when a format changes); bench_load and LoCoMo's score.py give JSON.

Results go to --save DIR (default /tmp/reverie-bench, -quick with --quick): results.json (merged
with what is there, so `--only` reruns one benchmark) and NAME.log, each
benchmark's raw output. A copy of results.json goes beside the report
(docs/bench/results.json under --out's folder, kept in the repository): where
--save holds none (a fresh machine), `--only` starts from it, so the other
benchmarks' last figures stay in the report with their own date and commit.
--quick runs shortened versions on a 10k store in /tmp/rv-report-10k (fewer
queries, runs and seconds); its targets at 100k are not judged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import report_render  # noqa: E402

LOCOMO_DATA = REPO.parent / "shared/bench/locomo/locomo-dev.json"
SCORE_PY = REPO.parent / "shared/bench/locomo/score.py"
LOAD_CLIENTS = (1, 4, 16, 64)


class ParseError(Exception):
    pass


def _num(s: str) -> float:
    return float(s.replace(",", ""))


def _match(pattern: str, text: str) -> re.Match[str]:
    m = re.search(pattern, text, re.MULTILINE)
    if m is None:
        raise ParseError(f"output did not match {pattern!r}")
    return m


# -- parsers of the benchmarks' human output ---------------------------------------------


def parse_search(out: str) -> dict[str, Any]:
    styles = {}
    row = r"^\s+(\w+)\s+(\d+)\s+([\d.]+)ms\s+([\d.]+)ms\s+([\d.]+)ms\s+([\d.]+)ms\s+(\d+)%"
    for m in re.finditer(row, out, re.MULTILINE):
        styles[m[1]] = {
            "count": int(m[2]),
            "p50": _num(m[3]),
            "p90": _num(m[4]),
            "p99": _num(m[5]),
            "max": _num(m[6]),
            "found": _num(m[7]),
        }
    if "all" not in styles:
        raise ParseError("no 'all' row in bench_search's table")
    cpu = _match(r"daemon CPU ([\d.]+) ms per search.*RSS (\d+) MB", out)
    head = _match(r"^(\w+) search latency over the socket, (\d+) memories", out)
    built = re.search(r"^building (\d+) memories", out, re.MULTILINE) is not None
    return {
        "mode": head[1],
        "n": int(head[2]),
        "styles": styles,
        "cpu_ms": _num(cpu[1]),
        "rss_mb": _num(cpu[2]),
        "store_built": built,
    }


def parse_startup(out: str) -> dict[str, Any]:
    ready = _match(r"start-up to READY=1: median ([\d.]+) s, max ([\d.]+) s", out)
    idx = _match(r"index loaded and caught up: median ([\d.]+) s, max ([\d.]+) s", out)
    rss = _match(r"resident memory after load: (\d+) MiB", out)
    mem = re.search(r"^(\d+) memories, index", out, re.MULTILINE)
    res: dict[str, Any] = {
        "ready_s": _num(ready[1]),
        "ready_max_s": _num(ready[2]),
        "indexed_s": _num(idx[1]),
        "rss_mib": _num(rss[1]),
    }
    return res | ({"n": int(mem[1])} if mem else {})


def parse_backup(out: str) -> dict[str, Any]:
    q = _match(r"backup, no writes: ([\d.]+)s wall .*?(\d+) memories, (\d+) MB", out)
    b = _match(
        r"backup under writes: ([\d.]+)s wall, (\d+) writes .*?p50 ([\d.]+) ms, "
        r"p99 ([\d.]+) ms",
        out,
    )
    r = _match(r"^restore: ([\d.]+)s \(exit (\d+)\)", out)
    s = _match(r"start after restore until the index is ready: ([\d.]+)s", out)
    return {
        "quiet_s": _num(q[1]),
        "memories": int(q[2]),
        "mb": _num(q[3]),
        "busy_s": _num(b[1]),
        "busy_writes": int(b[2]),
        "busy_p50_ms": _num(b[3]),
        "busy_p99_ms": _num(b[4]),
        "restore_s": _num(r[1]),
        "restore_exit": int(r[2]),
        "restart_s": _num(s[1]),
    }


def parse_hook(out: str) -> dict[str, Any]:
    def row(label: str) -> tuple[float, float]:
        # bench_hook's line(): "<label> ... median X ms ... p99 Y ms"
        m = _match(re.escape(label) + r".*?median\s+([\d.]+)\s*ms.*?p99\s+([\d.]+)", out)
        return _num(m[1]), _num(m[2])

    bare = row("python -I -c pass")
    prompt = row("hook: UserPromptSubmit")
    post = row("hook: PostToolUse")
    ratio = _match(r"UserPromptSubmit / bare \(medians\) ([\d.]+)x", out)
    return {
        "bare_p50": bare[0],
        "bare_p99": bare[1],
        "prompt_p50": prompt[0],
        "prompt_p99": prompt[1],
        "post_p50": post[0],
        "post_p99": post[1],
        "ratio": _num(ratio[1]),
    }


def parse_ingest(out: str) -> dict[str, Any]:
    kinds = {}
    pat = (
        r"^\s*([\w-]+): +([\d,]+) events/s acknowledged.*?batch p50 ([\d.]+) ms, "
        r"p99 ([\d.]+) ms; daemon CPU ([\d.]+) µs/event"
    )
    for m in re.finditer(pat, out, re.MULTILINE):
        kinds[m[1]] = {
            "per_s": _num(m[2]),
            "p50_ms": _num(m[3]),
            "p99_ms": _num(m[4]),
            "cpu_us": _num(m[5]),
        }
    if not kinds:
        raise ParseError("no events/s line in bench_ingest's output")
    return {"kinds": kinds}


def parse_dream(out: str) -> dict[str, Any]:
    sizes = {}
    pat = r"^n=(\d+): full cycle ([\d.]+)s .*?incremental cycle ([\d.]+)s"
    for m in re.finditer(pat, out, re.MULTILINE):
        sizes[m[1]] = {"full_s": _num(m[2]), "incremental_s": _num(m[3])}
    if not sizes:
        raise ParseError("no 'full cycle' line in bench_dream_cycle's output")
    return {"sizes": sizes}


def parse_rpc(out: str) -> dict[str, Any]:
    ping = _match(r"no-op round trip .*?p50 (\d+) us\s+p99 (\d+) us", out)
    writes = {}
    pat = (
        r"acknowledged writes, (\d+) client\(s\).*?: (\d+)/s\s+latency p50 ([\d.]+) ms p99 ([\d.]+)"
    )
    for m in re.finditer(pat, out):
        writes[m[1]] = {"per_s": _num(m[2]), "p50_ms": _num(m[3]), "p99_ms": _num(m[4])}
    return {"ping_p50_us": _num(ping[1]), "ping_p99_us": _num(ping[2]), "writes": writes}


# -- running -----------------------------------------------------------------------------


@dataclass
class Step:
    """One process of a benchmark: its argv (relative to the repo root) and parser."""

    argv: list[str]
    parse: Callable[[str], dict[str, Any]] | None
    json_out: bool = False  # stdout is one JSON object


@dataclass
class Bench:
    name: str
    steps: Callable[[argparse.Namespace], list[Step]]
    combine: Callable[[argparse.Namespace, list[dict[str, Any]]], dict[str, Any]] = field(
        default=lambda args, parts: parts[0]
    )


def py(script: str, *args: object) -> list[str]:
    return ["python", f"tests/bench/{script}", *(str(a) for a in args)]


def _search_steps(mode: str) -> Callable[[argparse.Namespace], list[Step]]:
    def steps(a: argparse.Namespace) -> list[Step]:
        extra: list[object] = ["--queries", 200, "--warmup", 50] if a.quick else []
        argv = py("bench_search.py", "--n", a.n, "--keep", a.store, "--mode", mode, *extra)
        return [Step(argv, parse_search)]

    return steps


def _load_steps(a: argparse.Namespace) -> list[Step]:
    seconds = 5 if a.quick else 30
    extra: list[object] = ["--dream-wait", 15] if a.quick else []
    return [
        Step(
            py(
                "bench_load.py",
                "--clients",
                c,
                "--seconds",
                seconds,
                "--n",
                a.n,
                "--source",
                a.store,
                *extra,
                "--json",
            ),
            None,
            json_out=True,
        )
        for c in LOAD_CLIENTS
    ]


def _load_combine(a: argparse.Namespace, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"n": a.n, "runs": {str(p["clients"]): p for p in parts}}


def _locomo_steps(a: argparse.Namespace) -> list[Step]:
    data = LOCOMO_DATA
    if a.quick:  # one conversation
        data = Path(a.save) / "locomo-quick.json"
        data.write_text(json.dumps(json.loads(LOCOMO_DATA.read_text())[:1]))
    run = Path(a.save) / "locomo-run.jsonl"
    # The shared data set as the README writes it (../shared/...), a /tmp subset as it is.
    shown = os.path.relpath(data, REPO) if data == LOCOMO_DATA else str(data)
    score = ["python", os.path.relpath(SCORE_PY, REPO), "--data", shown, "--run", str(run)]
    return [
        Step(py("locomo.py", "--data", shown, "--out", run), parse_locomo_run),
        Step([*score, "--json"], None, json_out=True),
        Step([*score, "--paper-compat", "--json"], None, json_out=True),
    ]


def parse_locomo_run(out: str) -> dict[str, Any]:
    m = _match(r"one at a time: p50 ([\d.]+) ms, p99 ([\d.]+) ms over (\d+) searches", out)
    return {"search_p50_ms": _num(m[1]), "search_p99_ms": _num(m[2]), "searches": int(m[3])}


def _locomo_combine(a: argparse.Namespace, parts: list[dict[str, Any]]) -> dict[str, Any]:
    run, default, paper = parts
    # score.py's categories; "overall" is the figure (categories 1-4 by default).
    d_all, p_all = default.get("overall", {}), paper.get("overall", {})
    return {
        **run,
        "default": d_all,
        "paper": p_all,
        "questions_default": d_all.get("n", 0),
        "by_category": default,
    }


BENCHES = [
    Bench("search_lexical", _search_steps("lexical")),
    Bench("search_hybrid", _search_steps("hybrid")),
    Bench(
        "startup",
        lambda a: [
            Step(
                py(
                    "bench_startup.py",
                    "--data-dir",
                    Path(a.store) / "d-data",
                    "--runs",
                    2 if a.quick else 5,
                ),
                parse_startup,
            )
        ],
    ),
    Bench(
        "backup",
        lambda a: [
            Step(
                py("bench_backup.py", Path(a.store) / "d-data", "--root", "/tmp/rv-report-bk"),
                parse_backup,
            )
        ],
    ),
    Bench("load", _load_steps, _load_combine),
    Bench(
        "hook",
        lambda a: [
            Step(
                py(
                    "bench_hook.py",
                    "--n",
                    a.n,
                    "--work",
                    # bench_hook's own default store at 100k (built once, reused)
                    "/tmp/rv-hook-100k" if a.n == 100_000 else f"/tmp/rv-report-hook-{a.n}",
                    *(["--runs", 20, "--warmup", 5] if a.quick else []),
                ),
                parse_hook,
            )
        ],
    ),
    Bench(
        "ingest",
        lambda a: [
            Step(
                py(
                    "bench_ingest.py",
                    *(["--seconds", 1, "--kind", "session"] if a.quick else ["--seconds", 5]),
                ),
                parse_ingest,
            )
        ],
    ),
    Bench(
        "dream_cycle",
        lambda a: [Step(py("bench_dream_cycle.py", 10_000 if a.quick else 100_000), parse_dream)],
    ),
    Bench(
        "rpc",
        lambda a: [
            Step(
                py(
                    "bench_rpc.py",
                    "--no-index",
                    *(
                        ["--seconds", 1, "--pings", 2000]
                        if a.quick
                        else ["--seconds", 5, "--pings", 20000]
                    ),
                ),
                parse_rpc,
            )
        ],
    ),
    Bench("locomo", _locomo_steps, _locomo_combine),
]


def machine_facts() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    import apsw

    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "hnswlib": version("hnswlib"),
        "numpy": version("numpy"),
        "commit": commit(),
    }


def commit() -> str:
    """The checked-out commit, marked if the tree has uncommitted changes."""

    def git(*argv: str) -> str:
        r = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True)
        return r.stdout.strip()

    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def saved_results(out: Path) -> Path:
    """Where the results behind the report `out` are kept (beside its plots)."""
    return out.parent / report_render.PLOT_DIR / "results.json"


def earlier_results(path: Path, kept: Path) -> dict[str, Any]:
    """The results a run adds to: --save's (this machine's last run), else the copy
    kept beside the report, else none."""
    for src in (path, kept):
        if src.exists():
            data: dict[str, Any] = json.loads(src.read_text())
            return data
    return {}


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_bench(b: Bench, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    steps = b.steps(args)
    shown = [shlex.join(s.argv) for s in steps]
    res: dict[str, Any] = {
        "commands": shown,
        "started": now(),
        "commit": commit(),  # --only reruns some: each keeps its own date and commit
        "loadavg_before": list(os.getloadavg()),
        "returncode": 0,
        "error": None,
        "data": None,
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    parts = []
    # Output goes straight to the logs (follow them with tail -f), stdout to NAME.log
    # and stderr to NAME.err.log, and is read back from there.
    err_log = log.with_suffix(".err.log")
    with log.open("w") as f, err_log.open("w") as ferr:
        for step, cmd in zip(steps, shown, strict=True):
            print(f"[{b.name}] {cmd}", flush=True)
            for fh in (f, ferr):
                fh.write(f"$ {cmd}\n")
                fh.flush()
            start = f.tell()
            argv = [sys.executable, *step.argv[1:]] if step.argv[0] == "python" else step.argv
            try:
                p = subprocess.run(
                    argv, cwd=REPO, env=env, stdout=f, stderr=ferr, timeout=args.timeout
                )
            except subprocess.TimeoutExpired:
                res.update(returncode=-1, error=f"timed out after {args.timeout} s: {cmd}")
                break
            f.seek(0, os.SEEK_END)
            ferr.seek(0, os.SEEK_END)
            with log.open() as r:
                r.seek(start)
                out = r.read()
            if p.returncode != 0:
                res["returncode"] = p.returncode
                tail = err_log.read_text().strip().splitlines()[-3:] or out.splitlines()[-3:]
                res["error"] = f"exit {p.returncode}: {' / '.join(tail)}"
                if not step.json_out:  # bench_load exits 1 on failed requests: keep figures
                    break
            try:
                parts.append(json.loads(out) if step.json_out else step.parse(out))  # type: ignore[misc]
            except (ParseError, json.JSONDecodeError) as e:
                res["error"] = f"{res['error'] or ''} cannot read its output: {e}".strip()
                break
    res["duration_s"] = round(time.monotonic() - t0, 1)
    res["loadavg_after"] = list(os.getloadavg())
    if len(parts) == len(steps):
        res["data"] = b.combine(args, parts)
        res["data"].setdefault("n", args.n)  # the store size the targets are stated at
    notes = []
    if b.name.startswith("search") and res["data"]:
        built = res["data"].get("store_built")
        notes.append(
            f"store {args.store}: {'built by this run' if built else 'reused (built earlier)'}"
            f"; this benchmark took {res['duration_s']} s in all"
        )
    res["notes"] = notes
    print(f"[{b.name}] {res['duration_s']} s, error: {res['error']}", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [b.name for b in BENCHES]
    ap.add_argument("--quick", action="store_true", help="shortened benchmarks, a 10k store")
    ap.add_argument("--only", help=f"comma-separated, from: {','.join(names)}")
    ap.add_argument("--from-json", type=Path, help="re-render saved results (DIR or a .json)")
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument(
        "--save", type=Path, help="results dir (default /tmp/reverie-bench, quick: ...-quick)"
    )
    ap.add_argument("--store", type=Path, help="kept corpus store (default /tmp/rv-100k)")
    ap.add_argument("--n", type=int, help="memories in the store (default 100k; quick 10k)")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per benchmark process")
    ap.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNGs")
    args = ap.parse_args(argv)
    if args.plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.exit(
                "report.py: matplotlib is not installed; it draws the plots. Install it with "
                "`pip install matplotlib` (or `pip install 'reverie[bench]'`), or pass --no-plots."
            )
    if args.from_json:
        src = args.from_json / "results.json" if args.from_json.is_dir() else args.from_json
        results = json.loads(src.read_text())
    else:
        only = set(args.only.split(",")) if args.only else set(names)
        if unknown := only - set(names):
            ap.error(f"--only: unknown {sorted(unknown)}; known: {names}")
        args.n = args.n or (10_000 if args.quick else 100_000)
        args.store = args.store or Path("/tmp/rv-report-10k" if args.quick else "/tmp/rv-100k")
        args.save = args.save or Path("/tmp/reverie-bench" + ("-quick" if args.quick else ""))
        args.save.mkdir(parents=True, exist_ok=True)
        path, kept = args.save / "results.json", saved_results(args.out)
        results = earlier_results(path, kept)
        if results.get("quick", args.quick) != args.quick:
            results = {}  # do not mix quick and full figures
        machine = machine_facts()
        machine["started"], machine["loadavg_start"] = now(), list(os.getloadavg())
        t0 = time.monotonic()
        results.setdefault("benchmarks", {})
        for b in BENCHES:
            if b.name in only:
                results["benchmarks"][b.name] = run_bench(b, args, args.save / f"{b.name}.log")
                path.write_text(json.dumps(results, indent=1))
        machine["finished"], machine["loadavg_end"] = now(), list(os.getloadavg())
        shown_argv = argv if argv is not None else sys.argv[1:]
        results.update(
            machine=machine,
            quick=args.quick,
            command=shlex.join(["python", "tests/bench/report.py", *shown_argv]),
            duration_s=round(time.monotonic() - t0, 1),
        )
        text = json.dumps(results, indent=1)
        path.write_text(text)
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(text + "\n")
        print(f"results saved in {path} and {kept}; benchmark logs beside the first")
    pngs = report_render.render(results, args.out, plots=args.plots)
    print(f"wrote {args.out}" + "".join(f"\n      {p}" for p in pngs))
    figs = report_render.figures(results)
    missed = [f.what for f in figs if f.verdict == "NOT MET"]
    failed = [n for n, b in results.get("benchmarks", {}).items() if b.get("error")]
    print(f"targets not met: {missed or 'none'}; benchmarks with errors: {failed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
