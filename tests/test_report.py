"""tests/bench/report.py's rendering, on a fixed results file (no benchmark is run)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent / "bench"
SAMPLE = Path(__file__).resolve().parent / "data" / "bench_results_sample.json"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import report_render  # noqa: E402


def sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE.read_text())
    return data


def target_rows(md: str) -> dict[str, list[str]]:
    """The Targets table: figure -> [result, target, verdict, command]."""
    section = md.split("## Targets", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0] not in ("figure", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_targets_are_judged(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    report_render.render(sample(), out, plots=False)
    md = out.read_text()
    rows = target_rows(md)
    expect = {
        "search p99, hybrid, 100,000 memories": ("8.30 ms", "met"),
        "search p99, lexical, 100,000 memories": ("12.5 ms", "NOT MET"),
        "64 clients: remember p99": ("25 ms", "NOT MET"),
        "64 clients: search p99": ("21 ms", "met"),
        "64 clients: failed requests": ("2", "NOT MET"),
        "16 clients: failed requests": ("0", "met"),
        "hook UserPromptSubmit median": ("40 ms", "met"),
        "hook median / bare interpreter median": ("2.67x", "met"),
        "events/s acknowledged, session": ("18,000/s", "NOT MET"),
        "full dream cycle, 100,000 memories": ("95.2 s", "met"),
        "no-op round trip p50": ("65 µs", "met"),
        "acknowledged writes/s, 8 client(s)": ("5,142/s", "met"),
        "LoCoMo dev R@10, categories 1-4, default (hybrid, lexical embedder)": ("72.5", "met"),
    }
    for what, (value, verdict) in expect.items():
        assert rows[what][0] == value, what
        assert rows[what][2] == verdict, what
    # Only the 64-client p99s carry issue 7's latency targets.
    assert "16 clients: remember p99" not in rows
    assert rows["startup: exit 1: daemon did not start"][2] == "not measured"
    assert "Targets met: 13; not met: 4." in md


def test_commands_and_machine_are_written(tmp_path: Path) -> None:
    results = sample()
    out = tmp_path / "BENCHMARKS.md"
    report_render.render(results, out, plots=False)
    md = out.read_text()
    for b in results["benchmarks"].values():
        for cmd in b["commands"]:
            assert cmd in md
    rows = target_rows(md)
    assert rows["64 clients: search p99"][3] == (
        "`python tests/bench/bench_load.py --clients 64 --seconds 30 --n 100000 "
        "--source /tmp/rv-100k --json`"
    )
    for fact in ("Sample CPU @ 2.00GHz", "Linux 6.18.0", "CPython 3.11.7", "3.50.4", "0.8.0"):
        assert fact in md
    assert "| load average at start | 0.31 / 0.40 / 0.50 |" in md
    assert "| 64 | remember | 6400 | 640 | 2 | 25 | 50 | 2 |" in md
    assert "## Plots" not in md  # none asked for


def test_quick_results_do_not_judge_100k_targets(tmp_path: Path) -> None:
    results = sample()
    results["quick"] = True
    results["benchmarks"]["search_lexical"]["data"]["n"] = 10_000
    results["benchmarks"]["load"]["data"]["n"] = 10_000
    out = tmp_path / "BENCHMARKS.md"
    report_render.render(results, out, plots=False)
    md = out.read_text()
    rows = target_rows(md)
    assert "search p99, lexical, 10,000 memories" not in rows  # no target at 10k
    assert "64 clients: remember p99" not in rows
    assert "**Quick run**" in md


def test_plots_are_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "BENCHMARKS.md"
    pngs = report_render.render(sample(), out, plots=True)
    assert [p.name for p in pngs] == [report_render.LATENCY_PNG, report_render.THROUGHPUT_PNG]
    for p in pngs:
        assert p.parent == tmp_path / "docs" / "bench"
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 10_000
    md = out.read_text()
    assert f"![load_latency_vs_clients](docs/bench/{report_render.LATENCY_PNG})" in md


def test_from_json_renders_without_running(tmp_path: Path) -> None:
    out = tmp_path / "r" / "BENCHMARKS.md"
    assert report.main(["--from-json", str(SAMPLE), "--out", str(out), "--no-plots"]) == 0
    assert "| hook UserPromptSubmit p99 | 95 ms |" in out.read_text()


def test_parsers_read_the_benchmarks_output() -> None:
    # Lines as the benchmarks print them (format strings of bench_*.py).
    search = (
        "\nhybrid search latency over the socket, 100000 memories, 1000 queries, one at a time:\n"
        "  style      count      p50      p90      p99      max  found\n"
        "  workspace    250   5.20ms   6.90ms   8.10ms   12.0ms  88%\n"
        "  all         1000   5.40ms   7.00ms   7.52ms   15.1ms  91%\n"
        "daemon CPU 5.10 ms per search (mean; immune ...), RSS 459 MB\n"
    )
    d = report.parse_search(search)
    assert d["mode"] == "hybrid" and d["n"] == 100_000 and d["styles"]["all"]["p99"] == 7.52
    assert d["cpu_ms"] == 5.1 and not d["store_built"]
    ingest = (
        "     session:    20,400 events/s acknowledged (102,000 events, 61,000 observations, "
        "4 clients x 500/batch, 5.0 s); batch p50 90.1 ms, p99 210.3 ms; daemon CPU 48.2 "
        "µs/event (user 40.0, system 8.2)\n"
    )
    assert report.parse_ingest(ingest)["kinds"]["session"]["per_s"] == 20_400
    hook = (
        "  python -I -c pass                      median   14.2 ms  p90   16.0  p99   19.9 max 3\n"
        "  hook: UserPromptSubmit (post+search)   median   41.0 ms  p90   50.0  p99   90.5 max 9\n"
        "  hook: PostToolUse (post only)          median   35.0 ms  p90   40.0  p99   60.0 max 7\n"
        "  UserPromptSubmit / bare (medians) 2.89x; 200/200 prompts got memories\n"
    )
    h = report.parse_hook(hook)
    assert (h["prompt_p50"], h["prompt_p99"], h["ratio"]) == (41.0, 90.5, 2.89)
    with pytest.raises(report.ParseError):
        report.parse_startup("nothing here")


def test_each_section_says_when_and_at_which_commit_it_ran(tmp_path: Path) -> None:
    results = sample()
    benches = results["benchmarks"]
    first, second = list(benches)[:2]
    benches[first].update(started="2026-11-20T10:00:00+00:00", commit="abc1234")
    benches[second].pop("commit", None)  # a result saved before commits were recorded
    out = tmp_path / "BENCHMARKS.md"
    report_render.render(results, out, plots=False)
    md = out.read_text()
    section = md.split(f"### {first}\n", 1)[1]
    assert section.lstrip().startswith("Run 2026-11-20T10:00:00+00:00 at commit abc1234:")
    assert "(commit not recorded)" in md.split(f"### {second}\n", 1)[1].split("###", 1)[0]


def test_a_fresh_machine_starts_from_the_results_kept_beside_the_report(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    kept = report.saved_results(out)
    assert kept == tmp_path / "docs" / "bench" / "results.json"
    save = tmp_path / "save" / "results.json"
    assert report.earlier_results(save, kept) == {}  # nothing anywhere
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps(sample()))
    assert report.earlier_results(save, kept) == sample()  # --save empty: the kept copy
    save.parent.mkdir()
    save.write_text(json.dumps({"benchmarks": {}}))
    assert report.earlier_results(save, kept) == {"benchmarks": {}}  # this machine's last run


def test_the_repository_keeps_the_results_behind_benchmarks_md() -> None:
    kept = report.saved_results(report.REPO / "BENCHMARKS.md")
    results = json.loads(kept.read_text())
    md = (report.REPO / "BENCHMARKS.md").read_text()
    for name, b in results["benchmarks"].items():
        assert f"### {name}\n" in md
        for cmd in b["commands"]:
            assert cmd in md
