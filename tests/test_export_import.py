"""Export to JSON Lines, import into a fresh daemon: same searches; import is idempotent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import Daemon, wait_indexed

QUERIES = ["database migration", "pytest fixtures", "deploy", "typescript build", "cache"]
TEXTS = [
    ("The database migration runs with alembic upgrade head", "fact", ["db"]),
    ("Use pytest fixtures instead of setUp methods", "preference", ["tests"]),
    ("Deploy with tools/deploy.sh after the CI is green", "procedure", ["deploy"]),
    ("The typescript build uses tsc --build and a project references graph", "fact", []),
    ("Redis is the cache; invalidate keys on write", "decision", ["cache", "redis"]),
    ("Old note about the cache that was forgotten", "observation", []),
]


def _cli(d: Daemon, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reverie", *args, "--socket", str(d.socket)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        env=d.environ(),
    )


def _results(d: Daemon) -> dict[str, object]:
    """Full-text rankings exactly; for hybrid, the best hit.

    Vector search is approximate: among the near-identical filler memories
    its ties may break differently in another index, so only the lexical
    ranking is compared whole.
    """
    with d.client() as c:
        wait_indexed(c)
        return {
            q: (
                [
                    (h.memory.uid, h.memory.content)
                    for h in c.search(q, limit=20, mode="lexical").hits
                ],
                c.search(q, limit=1).hits[0].memory.uid,
            )
            for q in QUERIES
        }


def test_export_then_import_gives_same_search_results(short_tmp: Path) -> None:
    src = Daemon(short_tmp, name="src").start()
    with src.client() as c:
        ids = [c.remember(t, kind=k, tags=tags, workspace="proj").id for t, k, tags in TEXTS]
        c.forget(ids[-1])
        for n in range(1200):  # more than one export page
            c.remember(f"filler memory {n} about nothing in particular", workspace="bulk")
    dump = short_tmp / "dump.jsonl"
    out = _cli(src, "export", "--output", str(dump))
    assert out.returncode == 0, out.stderr
    lines = dump.read_text().splitlines()
    assert len(lines) == len(TEXTS) - 1 + 1200  # the forgotten one is not exported
    before = _results(src)
    assert src.stop() == 0

    dst = Daemon(short_tmp, name="dst").start()
    first = _cli(dst, "import", str(dump), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"added": len(lines), "skipped": 0}
    again = _cli(dst, "import", str(dump), "--json")
    assert json.loads(again.stdout) == {"added": 0, "skipped": len(lines)}
    assert _results(dst) == before
    with dst.client() as c:
        assert c.status().memories["active"] == len(lines)
    assert dst.stop() == 0


def test_import_of_a_bad_file_adds_nothing(short_tmp: Path) -> None:
    d = Daemon(short_tmp).start()
    with d.client() as c:
        c.remember("one good memory")
    good = _cli(d, "export").stdout.splitlines()[0]
    rec = json.loads(good)
    rec["uid"] = "another-uid"
    bad = short_tmp / "bad.jsonl"
    bad.write_text(json.dumps(rec) + "\n" + '{"uid": "x", "content": 5}\n')
    out = _cli(d, "import", str(bad))
    assert out.returncode == 2
    assert "bad.jsonl:2" in out.stderr
    garbage = short_tmp / "garbage.jsonl"
    garbage.write_bytes(b"\xff\xfe not utf8\n")
    assert _cli(d, "import", str(garbage)).returncode == 2
    with d.client() as c:
        assert c.status().memories["total"] == 1
    assert d.stop() == 0
