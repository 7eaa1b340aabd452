"""Memory updates with version snapshots: the store on real SQLite, then the real daemon
(RPC and CLI), the vector indexer following an update, purge and conflicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apsw
import pytest
from dream_store import found, open_db, remember
from harness import Daemon, wait_indexed
from reverie.errors import Conflict, InvalidParams, NotFound
from reverie.phases.deep import DeepConfig, DeepSleep
from reverie.phases.runner import apply_plan, transact_on
from reverie.rpc.proto_versions import Update, UpdateResult, Versions, VersionsResult
from reverie.store import memories, versions
from reverie.store.connection import open_connection

NOW = 1_800_000_000.0


def _update(conn: apsw.Connection, mid: int, **kw: Any) -> UpdateResult:
    with conn:
        return versions.update(conn, Update(memory_id=mid, **kw), NOW)


def test_update_snapshots_the_old_row_and_reindexes(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    mid = remember(conn, "Deploys go through tools/deploy.sh", NOW - 100, kind="fact")
    before = memories.get(conn, mid)
    seq0 = int(conn.execute("SELECT seq FROM memories WHERE id = ?", (mid,)).get)

    res = _update(
        conn, mid, content="Deploys go through the release pipeline", reason="script retired"
    )
    assert res.changed and res.version == 1
    after = memories.get(conn, mid)
    assert after.id == mid and after.uid == before.uid  # same memory, in place
    assert after.content == "Deploys go through the release pipeline"
    assert after.content_hash == memories.content_hash(after.content) != before.content_hash
    assert int(conn.execute("SELECT seq FROM memories WHERE id = ?", (mid,)).get) > seq0
    # Full text follows the new text only.
    assert found(tmp_path, "pipeline") == [mid]
    assert found(tmp_path, "tools") == []

    listed = versions.list_versions(conn, mid)
    assert listed.current_version == 2 and [v.version for v in listed.versions] == [1]
    snap = listed.versions[0]
    assert snap.content == before.content and snap.content_hash == before.content_hash
    assert snap.importance == before.importance and snap.reason == "script retired"
    assert not snap.pinned and snap.replaced_at.timestamp() == NOW

    # Importance, pin and metadata: each update snapshots the row before it.
    res = _update(conn, mid, importance=0.9, pinned=True, metadata={"owner": "ops"})
    assert res.version == 2
    m = memories.get(conn, mid)
    assert m.importance == 0.9 and m.metadata == {"owner": "ops", "pinned": True}
    res = _update(conn, mid, pinned=False, metadata={"owner": None})
    assert res.version == 3
    m = memories.get(conn, mid)
    assert m.metadata == {} and m.content == "Deploys go through the release pipeline"
    listed = versions.list_versions(conn, mid)
    assert [v.version for v in listed.versions] == [3, 2, 1]
    assert listed.versions[0].pinned and listed.versions[0].metadata["owner"] == "ops"
    assert listed.versions[1].importance == 0.5

    # Asking for what it already is changes nothing and takes no snapshot.
    seq1 = int(conn.execute("SELECT seq FROM memories WHERE id = ?", (mid,)).get)
    noop = _update(conn, mid, importance=memories.get(conn, mid).importance)
    assert not noop.changed and noop.version is None
    assert int(conn.execute("SELECT seq FROM memories WHERE id = ?", (mid,)).get) == seq1
    assert len(versions.list_versions(conn, mid).versions) == 3


def test_update_redacts_and_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    a = remember(conn, "The staging host is stg-1", NOW - 100, kind="fact")
    b = remember(conn, "The prod host is prd-1", NOW - 100, kind="fact")
    _update(conn, a, content="The staging host is stg-2 <private>root pw hunter2</private>")
    stored = str(conn.execute("SELECT content FROM memories WHERE id = ?", (a,)).get)
    assert "hunter2" not in stored and "stg-2" in stored
    assert found(tmp_path, "hunter2") == []

    with pytest.raises(InvalidParams):
        _update(conn, a, content="<private>only a secret</private>")
    with pytest.raises(Conflict) as dup:
        _update(conn, a, content="The prod host is prd-1")
    assert dup.value.data["duplicate_of"] == b
    with pytest.raises(NotFound):
        _update(conn, 999, importance=0.1)

    with conn:
        conn.execute(
            "UPDATE memories SET state = 'superseded', superseded_by = ? WHERE id = ?", (a, b)
        )
    with pytest.raises(Conflict, match="superseded by #"):
        _update(conn, b, content="The prod host is prd-2")
    with conn:
        memories.forget(conn, a, purge=False, reason="gone")
    with pytest.raises(Conflict, match="forgotten"):
        _update(conn, a, content="The staging host is stg-3")
    # Refused updates left no snapshot behind.
    assert [v.version for v in versions.list_versions(conn, a).versions] == [1]
    assert versions.list_versions(conn, b).versions == []


def test_purge_erases_the_snapshots_with_the_text(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    mid = remember(conn, "The API token lives in vault path kv/app", NOW - 100, kind="fact")
    other = remember(conn, "The cache is redis", NOW - 100, kind="fact")
    _update(conn, mid, content="The API token lives in vault path kv/app2")
    _update(conn, other, content="The cache is valkey")
    with conn:
        memories.forget(conn, mid, purge=False, reason="x")
    assert len(versions.list_versions(conn, mid).versions) == 1  # a tombstone keeps them
    with conn:
        memories.forget(conn, mid, purge=True, reason="x")
    assert versions.list_versions(conn, mid).versions == []
    assert len(versions.list_versions(conn, other).versions) == 1


def test_deep_sleep_prunes_beyond_the_count_and_age_and_undo_restores(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    day = 86400.0
    mid = remember(conn, "Version 0 of the runbook", NOW - 400 * day, kind="fact")
    young = remember(conn, "Draft 0 of the plan", NOW - 400 * day, kind="fact")
    for i in range(1, 8):  # 7 snapshots, replaced 70, 60, ... 10 days ago
        with conn:
            versions.update(
                conn,
                Update(memory_id=mid, content=f"Version {i} of the runbook"),
                NOW - (80 - 10 * i) * day,
            )
    for i in range(1, 8):  # 7 snapshots, all replaced today: beyond the count, too young
        with conn:
            versions.update(
                conn, Update(memory_id=young, content=f"Draft {i} of the plan"), NOW - i
            )
    cfg = DeepConfig(
        versions_keep=3, versions_retention_days=30, maintenance=False, archive_max_score=0.0
    )
    deep = DeepSleep(cfg)  # no tier moves here: only the snapshots' retention
    plan = deep.plan(conn, NOW)
    prune = [op for op in plan.ops if isinstance(op, versions.PruneVersions)]
    # Keep v7, v6, v5 (the newest 3); v4..v1 were replaced 40..70 days ago, beyond
    # the 30 days: pruned. `young`'s extra 4 are beyond the count but not the age.
    assert [(op.memory_id, op.versions) for op in prune] == [(mid, [1, 2, 3, 4])]
    assert "14 version snapshots of 2 memories: prune 4 of 1 memories" in plan.notes

    snaps_before = conn.execute(
        "SELECT * FROM memory_versions ORDER BY memory_id, version"
    ).fetchall()
    report = apply_plan(plan, transact=transact_on(conn), clock=lambda: NOW)
    assert report.counts.get("prune_versions") == 1
    assert [v.version for v in versions.list_versions(conn, mid).versions] == [7, 6, 5]
    assert len(versions.list_versions(conn, young).versions) == 7
    # Numbering goes on from the newest kept snapshot.
    assert _update(conn, mid, content="Version 8 of the runbook").version == 8

    from reverie.phases.undo import undo

    with conn:
        conn.execute("DELETE FROM memory_versions WHERE memory_id = ? AND version = 8", (mid,))
    undone = undo(report.run_id, transact=transact_on(conn), clock=lambda: NOW)
    assert undone.reversed == 1 and undone.conflicts == 0
    after = conn.execute("SELECT * FROM memory_versions ORDER BY memory_id, version").fetchall()
    assert after == snaps_before  # exactly the rows that were pruned, back as they were

    # A second run prunes them again; after a purge of the memory, undo brings nothing back.
    report2 = apply_plan(deep.plan(conn, NOW), transact=transact_on(conn), clock=lambda: NOW)
    with conn:
        memories.forget(conn, mid, purge=True, reason="gone")
    undone2 = undo(report2.run_id, transact=transact_on(conn), clock=lambda: NOW)
    assert undone2.conflicts == 1
    assert versions.list_versions(conn, mid).versions == []


def test_update_and_versions_through_the_daemon_and_cli(daemon: Daemon, tmp_path: Path) -> None:
    with daemon.client() as c:
        mid = c.remember("The build runs on Jenkins", kind="fact").id
        wait_indexed(c)
        res = c.call(Update(memory_id=mid, content="The build runs on GitHub Actions"))
        assert isinstance(res, UpdateResult) and res.changed and res.version == 1
        m = c.get(mid)
        assert m.content == "The build runs on GitHub Actions"
        # The vector indexer re-embeds the overwritten text (it follows seq).
        wait_indexed(c)
        conn = open_connection(Path(c.status().database), readonly=True)
        try:
            seq = int(conn.execute("SELECT seq FROM memories WHERE id = ?", (mid,)).get)
        finally:
            conn.close()
        ix = c.status().index
        assert ix is not None and ix.indexed_seq >= seq
        vec = c.search("GitHub Actions", mode="vector", explain=True).hits
        assert vec and vec[0].memory.id == mid
        assert vec[0].explain is not None and (vec[0].explain.vector_score or 0) > 0.5
        hits = c.search("GitHub Actions", mode="lexical").hits
        assert [h.memory.id for h in hits] == [mid]

    f = tmp_path / "new.txt"
    f.write_text("The build runs on Buildkite")
    out = daemon.cli(
        "update",
        str(mid),
        "--content-file",
        str(f),
        "--pin",
        "--meta",
        "team=infra",
        "--reason",
        "moved CI",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "id": mid,
        "changed": True,
        "version": 2,
        "content_hash": memories.content_hash("The build runs on Buildkite"),
    }
    out = daemon.cli("update", str(mid), "--content", "x", "--content-file", str(f))
    assert out.returncode == 2 and "not both" in out.stderr
    out = daemon.cli("update", str(mid))
    assert out.returncode == 2 and "nothing to update" in out.stderr
    out = daemon.cli("versions", str(mid), "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert listed["current_version"] == 3
    assert [(v["version"], v["content"]) for v in listed["versions"]] == [
        (2, "The build runs on GitHub Actions"),
        (1, "The build runs on Jenkins"),
    ]
    out = daemon.cli("versions", str(mid))
    assert out.returncode == 0 and "v2" in out.stdout and "Jenkins" in out.stdout
    out = daemon.cli("versions", "9999")
    assert out.returncode == 4

    with daemon.client() as c:
        got = c.call(Versions(memory_id=mid))
        assert isinstance(got, VersionsResult) and got.versions[0].reason == "moved CI"
        assert got.versions[1].reason == "" and not got.versions[1].pinned
        assert c.get(mid).metadata == {"pinned": True, "team": "infra"}
        c.forget(mid)
        with pytest.raises(Conflict):
            c.call(Update(memory_id=mid, importance=0.2))
    out = daemon.cli("update", str(mid), "--importance", "0.3")
    assert out.returncode == 2 and "forgotten" in out.stderr
