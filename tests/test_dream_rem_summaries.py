"""REM's cluster summaries and run digest on a real SQLite store (the planted store).

Clusters of related memories get one `summary` listing every member in
provenance; a re-run plans nothing; a cluster that grows gets a new summary
superseding the old; every applied run that changed something ends with a
`digest`; undo purges what was created and brings back what was superseded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import apsw
from dream_store import DAY, dump, memory_state, open_db, reader, remember
from reverie.phases import ledger
from reverie.phases.ops_rem import SummarizeCluster, WriteDigest
from reverie.phases.rem import Rem, RemConfig
from reverie.phases.runner import Plan, apply_plan, transact_on
from reverie.phases.undo import undo
from test_dream_rem import plant


def _summaries(plan: Plan) -> list[SummarizeCluster]:
    return [op for op in plan.ops if isinstance(op, SummarizeCluster)]


def _row(
    conn: apsw.Connection, mid: int
) -> tuple[str, str, str, int | None, str, dict[str, object]]:
    kind, content, state, by, prov, meta = conn.execute(
        "SELECT kind, content, state, superseded_by, provenance, metadata FROM memories "
        "WHERE id = ?",
        (mid,),
    ).fetchone()
    return kind, content, state, by, prov, json.loads(meta)


def test_cluster_summaries_digest_idempotence_and_undo(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    p = plant(conn, now)
    before = memory_state(conn)
    before_dump = dump(conn)
    plan = Rem().plan(reader(tmp_path), now)
    assert dump(conn) == before_dump  # planning writes nothing
    sums = _summaries(plan)
    assert len(sums) == 7 and "7 cluster summaries" in plan.notes
    assert "1 clusters above 24 memories left alone" in plan.notes  # the 40 incidents
    assert isinstance(plan.ops[-1], WriteDigest)
    assert plan.ops[-1].planned == {
        "merge_duplicates": 14,
        "supersede": 20,
        "summarize_cluster": 7,
    }
    # Members are the survivors: no merged or superseded source is a member.
    sources = {s for g in p.dup_groups for s in g[1:]} | {old for old, _ in p.updates}
    assert not {m for op in sums for m in op.members} & sources
    prefs = next(op for op in sums if "prefers" in op.content)
    assert len(prefs.members) == 20 and prefs.content.startswith("Related memories (20, ")
    assert "- [preference] Alice prefers tea during the morning standup." in prefs.content
    assert all(len(op.content) <= RemConfig().summary_budget_chars for op in sums)

    report = apply_plan(plan, transact=transact_on(conn), data_dir=tmp_path, batch=5)
    assert report.status == "completed"
    assert report.counts == {
        "merge_duplicates": 14,
        "supersede": 20,
        "summarize_cluster": 7,
        "write_digest": 1,
    }
    created = {
        int(r[0]): r[1]
        for r in conn.execute(
            "SELECT id, kind FROM memories WHERE json_extract(metadata, '$.phase') = 'rem'"
        )
    }
    assert sorted(created.values()) == ["digest"] + ["summary"] * 7
    for mid, kind in created.items():
        _k, content, state, _by, prov, meta = _row(conn, mid)
        assert state == "active" and meta["phase"] == "rem"
        members = json.loads(prov)["memories"]
        if kind == "summary":  # every member reachable from its summary
            op = next(o for o in sums if o.content == content)
            assert members == op.members and meta["cluster_size"] == len(op.members)
            assert all(_row(conn, m)[2] == "active" for m in members)
        else:
            assert content.startswith(f"REM run {report.run_id}: merged 21 duplicates")
            assert (
                "superseded 20 outdated facts" in content and "wrote 7 cluster summaries" in content
            )
            assert f"#{p.updates[0][0]} → #{p.updates[0][1]}" in content
            assert set(members) >= set(created) - {mid} and json.loads(prov)["dream_run"]

    # Idempotent: nothing changed, nothing planned (incremental, then a full pass).
    assert Rem().plan(conn, now + 60).ops == []
    assert Rem(RemConfig(incremental=False)).plan(conn, now + 60).ops == []

    result = undo(report.run_id, transact=transact_on(conn), data_dir=tmp_path)
    assert (result.reversed, result.conflicts) == (len(plan.ops), 0)
    after = memory_state(conn)
    assert {m: after[m] for m in before} == before
    assert all(after[m][8] == "forgotten" and after[m][4] == "" for m in created)
    assert [x["event"] for x in ledger.read_lines(tmp_path)] == ["run", "undo"]
    again = Rem().plan(conn, now + 120)  # the same clusters are found again
    assert [op.content for op in _summaries(again)] == [op.content for op in sums]


def test_a_growing_cluster_gets_a_new_summary_superseding_the_old(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    plant(conn, now)
    cfg = RemConfig()
    ran = now + DAY
    first = Rem(cfg).plan(conn, ran)
    apply_plan(first, transact=transact_on(conn), clock=lambda: ran)
    old = next(op for op in _summaries(first) if "prefers" in op.content)
    old_id = int(
        conn.execute(
            "SELECT id FROM memories WHERE kind = 'summary' AND content = ?", (old.content,)
        ).get
    )
    late = ran + 60
    new = remember(conn, "Kim prefers tea during the morning standup.", late, kind="preference")
    with conn:
        conn.execute("UPDATE memories SET updated_at = ? WHERE id = ?", (late, new))
    plan = Rem(cfg).plan(conn, late)
    # Incremental: only `new` and the survivors of the last run changed, yet the
    # whole cluster is reached (its other members are unchanged since).
    (grown,) = _summaries(plan)
    assert grown.members == sorted([*old.members, new]) and grown.supersedes == [old_id]
    assert "Related memories (21, " in grown.content
    report = apply_plan(plan, transact=transact_on(conn), clock=lambda: late)
    assert report.counts == {"summarize_cluster": 1, "write_digest": 1}
    new_sum = int(
        conn.execute(
            "SELECT id FROM memories WHERE kind = 'summary' AND content = ?", (grown.content,)
        ).get
    )
    _k, _c, state, by, _p, _m = _row(conn, old_id)
    assert (state, by) == ("superseded", new_sum)  # not edited in place
    assert json.loads(_row(conn, new_sum)[4]) == {"memories": grown.members, "supersedes": [old_id]}
    digest = conn.execute(
        "SELECT content FROM memories WHERE kind = 'digest' ORDER BY id DESC LIMIT 1"
    ).get
    assert f"replaced 1 older summaries (#{old_id} → #{new_sum})" in str(digest)
    assert Rem(cfg).plan(conn, late + 60).ops == []

    undone = undo(report.run_id, transact=transact_on(conn))
    assert (undone.reversed, undone.conflicts) == (2, 0)
    assert _row(conn, old_id)[2:4] == ("active", None)
    assert _row(conn, new_sum)[2] == "forgotten"


def test_caps_small_clusters_and_switches(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    plant(conn, now)
    capped = Rem(RemConfig(max_summaries=2)).plan(conn, now)
    assert len(_summaries(capped)) == 2 and "(5 more wait for the next run)" in capped.notes
    off = Rem(RemConfig(cluster_summaries=False, digest=False)).plan(conn, now)
    assert not _summaries(off) and not any(isinstance(op, WriteDigest) for op in off.ops)
    strict = Rem(RemConfig(cluster_min_size=11)).plan(conn, now)
    assert [len(op.members) for op in _summaries(strict)] == [20, 12]
    # Two related memories make no cluster; a third, added later, does.
    (tmp_path / "b").mkdir()
    c2 = open_db(tmp_path / "b")
    t = now - 10 * DAY
    a = remember(c2, "The release train deploys the billing service every Tuesday morning.", t)
    b = remember(c2, "The release train deploys the search service every Tuesday morning.", t + 1)
    assert Rem().plan(c2, now).ops == []
    cfg = RemConfig()
    ran = now + DAY
    apply_plan(Rem(cfg).plan(c2, ran), transact=transact_on(c2), clock=lambda: ran)
    c = remember(c2, "The release train deploys the checkout service every Tuesday morning.", t + 2)
    with c2:
        c2.execute("UPDATE memories SET updated_at = ? WHERE id = ?", (ran + 60, c))
    (op,) = _summaries(Rem(cfg).plan(c2, ran + 60))
    assert op.members == [a, b, c] and op.supersedes == []
    assert "on: deploys, every, morning, release, service." in op.content
