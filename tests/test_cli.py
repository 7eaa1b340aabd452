"""The CLI end to end (real processes), and its documentation."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from harness import Daemon
from reverie.rpc.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [c for c in _commands() if f"`reverie {c}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"


def test_every_command_takes_socket_and_json() -> None:
    for name in _commands():
        out = subprocess.run(
            [sys.executable, "-m", "reverie", name, "--help"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "--socket" in out.stdout and "--json" in out.stdout, name


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"# 2\. install the test extra.*\n(.+)\n", readme)
    assert m, "README must show the test command"
    assert m.group(1).strip() in (ROOT / ".ci" / "run").read_text()


def test_cli_round_trip(daemon: Daemon) -> None:
    out = daemon.cli(
        "remember",
        "Use ruff for linting",
        "--kind",
        "preference",
        "--tag",
        "lint",
        "--meta",
        "source=review",
        "--meta",
        "n=3",
    )
    assert out.returncode == 0, out.stderr
    mid = int(out.stdout.strip())
    again = daemon.cli("remember", "Use ruff for linting")
    assert int(again.stdout) == mid and "already remembered" in again.stderr
    piped = daemon.cli("remember", "-", "--json", stdin="text from stdin")
    assert json.loads(piped.stdout)["created"] is True

    found = json.loads(daemon.cli("search", "linting", "--json").stdout)
    assert found["hits"][0]["memory"]["id"] == mid
    human = daemon.cli("search", "linting").stdout
    assert f"#{mid}" in human and "Use ruff" in human

    got = json.loads(daemon.cli("get", str(mid), "--json").stdout)
    assert got["metadata"] == {"source": "review", "n": 3} and got["tags"] == ["lint"]
    assert "preference" in daemon.cli("get", str(mid)).stdout

    assert daemon.cli("forget", str(mid)).returncode == 0
    after = json.loads(daemon.cli("search", "linting", "--json").stdout)["hits"]
    assert mid not in [h["memory"]["id"] for h in after]

    status = json.loads(daemon.cli("status", "--json").stdout)
    assert status["memories"]["forgotten"] == 1 and status["memories"]["active"] == 1
    human = daemon.cli("status").stdout
    assert "memories" in human and "index" in human and "per commit" in human


def test_errors_are_one_line_with_exit_codes(daemon: Daemon, short_tmp: Path) -> None:
    missing = daemon.cli("get", "999")
    assert missing.returncode == 4
    assert missing.stderr.count("\n") == 1 and "no memory with id 999" in missing.stderr
    bad = daemon.cli("remember", "x", "--importance", "7")
    assert bad.returncode == 2 and bad.stderr.startswith("reverie: error:")
    meta = daemon.cli("remember", "x", "--meta", "novalue")
    assert meta.returncode == 2 and "KEY=VALUE" in meta.stderr
    down = subprocess.run(
        [sys.executable, "-m", "reverie", "status", "--socket", str(short_tmp / "none.sock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode == 3
    assert "not running" in down.stderr and "reverie daemon" in down.stderr


def test_search_flags(daemon: Daemon) -> None:
    for text, kind, tag in [
        ("The release checklist lives in docs/release.md", "procedure", "release"),
        ("Release notes are written by the on-call person", "decision", "release"),
        ("Lunch order: release the pizza tracker", "observation", "food"),
    ]:
        out = daemon.cli("remember", text, "--kind", kind, "--tag", tag)
        assert out.returncode == 0, out.stderr
    found = json.loads(daemon.cli("search", "release", "--kind", "decision", "--json").stdout)
    assert [h["memory"]["kind"] for h in found["hits"]] == ["decision"]
    tagged = json.loads(daemon.cli("search", "release", "--tag", "food", "--json").stdout)
    assert [h["memory"]["tags"] for h in tagged["hits"]] == [["food"]]
    future = daemon.cli("search", "release", "--since", "2999-01-01", "--json")
    assert json.loads(future.stdout)["hits"] == []
    lexical = json.loads(daemon.cli("search", "release", "--mode", "lexical", "--json").stdout)
    assert lexical["mode"] == "lexical"
    explained = daemon.cli("search", "release checklist", "--explain", "--mode", "lexical")
    assert "lexical #1" in explained.stdout
    bad = daemon.cli("search", "x", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "not a date" in bad.stderr
