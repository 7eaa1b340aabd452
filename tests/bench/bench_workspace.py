"""Workspace identity figures: reading the repository files vs asking a git subprocess.

    python tests/bench/bench_workspace.py

Builds a few real repositories in a temporary directory (plain clone with a
remote, a linked worktree, a deep subdirectory, a folder outside git) and
times workspace_for() both ways, in-process and in a fresh interpreter.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reverie.rpc.workspace import workspace_for


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def build(root: Path) -> dict[str, Path]:
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "f").write_text("x")
    git(repo, "add", "f")
    git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "m")
    git(repo, "remote", "add", "origin", "git@github.com:acme/app.git")
    deep = repo.joinpath(*"abcdefgh")
    deep.mkdir(parents=True)
    git(repo, "worktree", "add", "-q", str(root / "wt"))
    outside = root / "plain" / "x" / "y"
    outside.mkdir(parents=True)
    return {
        "repo top level": repo,
        "8 levels down": deep,
        "linked worktree": root / "wt",
        "outside git": outside,
    }


def per_call(path: Path, method: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        workspace_for(path, method=method)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
    return times


def fresh(path: Path, method: str, runs: int = 15) -> tuple[float, float]:
    """Medians, in a fresh interpreter, of (import of the module, first workspace_for call)."""
    code = (
        "import time; t0 = time.perf_counter(); "
        "from reverie.rpc.workspace import workspace_for; t1 = time.perf_counter(); "
        f"workspace_for({str(path)!r}, method={method!r}); "
        "print((t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        cmd = [sys.executable, "-c", code]
        outs = [
            subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout.split()
            for _ in range(runs + 1)
        ][1:]
    return statistics.median(float(o[0]) for o in outs), statistics.median(
        float(o[1]) for o in outs
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        paths = build(Path(d))
        for name, path in paths.items():
            files = per_call(path, "files", 2000)
            gits = per_call(path, "git", 40)
            print(
                f"{name:16s} files: median {statistics.median(files) * 1e6:7.1f} us  "
                f"git: median {statistics.median(gits) * 1e3:6.2f} ms"
            )
        path = paths["linked worktree"]
        for method in ("files", "git"):
            imported, call = fresh(path, method)
            print(
                f"fresh interpreter, method={method}: import {imported:.1f} ms (with reverie's "
                f"__init__), first workspace_for(worktree) {call:.2f} ms"
            )


if __name__ == "__main__":
    main()
