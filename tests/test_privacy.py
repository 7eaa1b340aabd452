"""Secrets and <private> spans never reach the store, and never leave it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest
from harness import Daemon
from reverie.errors import InvalidParams

# Built at run time so that no well-formed token sits in the repository.
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"
OPENAI_KEY = "sk-proj-" + "Zx9Yw8Vu7T" * 4


def _raw_rows(d: Daemon) -> str:
    conn = apsw.Connection(str(d.data_dir / "reverie.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT content, metadata FROM memories").fetchall()
        return json.dumps(rows)
    finally:
        conn.close()


def test_secrets_and_private_spans_are_removed_before_storing(daemon: Daemon) -> None:
    text = (
        f"Deploy with GITHUB_TOKEN={GITHUB_TOKEN} from the CI runner. "
        "<private>my salary is 123456</private> The runner is ci-7."
    )
    with daemon.client() as c:
        mid = c.remember(text, metadata={"api_key": OPENAI_KEY, "note": "runner ci-7"}).id
        m = c.get(mid)
        assert GITHUB_TOKEN not in m.content and "123456" not in m.content
        assert "[REDACTED:" in m.content and "The runner is ci-7." in m.content
        assert OPENAI_KEY not in json.dumps(m.metadata) and m.metadata["note"] == "runner ci-7"
        # Not findable by the secret's text; and no result of any mode carries it.
        assert c.search(GITHUB_TOKEN, mode="lexical").hits == []
        assert c.search("salary 123456", mode="lexical").hits == []
        for hit in c.search(f"{GITHUB_TOKEN} salary 123456").hits:
            assert GITHUB_TOKEN not in hit.memory.content and "123456" not in hit.memory.content
        exported = "\n".join(json.dumps(r.content) for r in c.export())
        assert GITHUB_TOKEN not in exported
    raw = _raw_rows(daemon)
    assert GITHUB_TOKEN not in raw and OPENAI_KEY not in raw and "123456" not in raw


def test_a_memory_that_is_all_private_is_refused(daemon: Daemon) -> None:
    with daemon.client() as c, pytest.raises(InvalidParams, match="empty"):
        c.remember("<private>nothing to keep</private>")


def test_rows_stored_before_redaction_do_not_leak_on_output(short_tmp: Path) -> None:
    d = Daemon(short_tmp).start()
    with d.client() as c:
        mid = c.remember("placeholder text for an old memory").id
    assert d.stop() == 0
    # An old row written before a pattern existed: put the secret in directly.
    conn = apsw.Connection(str(d.data_dir / "reverie.db"))
    conn.execute(
        "UPDATE memories SET content = ?, metadata = ? WHERE id = ?",
        (f"old note with {GITHUB_TOKEN}", json.dumps({"token": OPENAI_KEY}), mid),
    )
    conn.close()
    d.start()
    with d.client() as c:
        m = c.get(mid)
        assert GITHUB_TOKEN not in m.content and OPENAI_KEY not in json.dumps(m.metadata)
        hits = c.search("old note", mode="lexical").hits
        assert hits and all(GITHUB_TOKEN not in h.memory.content for h in hits)
        assert all(GITHUB_TOKEN not in r.content for r in c.export())
    out = subprocess.run(
        [sys.executable, "-m", "reverie", "get", str(mid), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env=d.environ(),
    )
    assert GITHUB_TOKEN not in out.stdout and OPENAI_KEY not in out.stdout
    assert d.stop() == 0


def test_import_redacts_records_from_elsewhere(daemon: Daemon, short_tmp: Path) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {
        "uid": "from-another-store",
        "workspace": "w",
        "kind": "fact",
        "content": f"token {GITHUB_TOKEN} for the bot",
        "created_at": now,
        "observed_at": now,
        "updated_at": now,
        "metadata": {"password": "hunter2-Secret!"},
    }
    f = short_tmp / "in.jsonl"
    f.write_text(json.dumps(record) + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "reverie", "import", str(f)],
        capture_output=True,
        text=True,
        timeout=30,
        env=daemon.environ(),
    )
    assert out.returncode == 0, out.stderr
    raw = _raw_rows(daemon)
    assert GITHUB_TOKEN not in raw and "hunter2-Secret!" not in raw
