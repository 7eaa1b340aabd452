"""REM on a real SQLite store: planted duplicates, paraphrases and superseded facts.

The planted store (`plant`) has known ground truth: near-copies that must
merge into one memory, look-alike facts that must not (a word substituted,
a negation, another subject with the same value), and fact updates (same
subject, another value) whose older memory must be superseded by the newer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import msgspec
import numpy as np
import pytest
from dream_store import DAY, dump, memory_state, open_db, reader, remember, seqs
from harness import Daemon, wait_indexed
from reverie.phases import ledger
from reverie.phases.ops_rem import MergeDuplicates, Supersede
from reverie.phases.rem import Rem, RemConfig
from reverie.phases.rem import touched_ids as _ids
from reverie.phases.rem_rules import classify, features
from reverie.phases.runner import apply_plan, transact_on
from reverie.phases.undo import undo
from reverie.rpc.proto_dreams import DreamsRun, DreamsRunResult, DreamsUndo, UndoReport
from reverie.store import search, vectors
from reverie.store.embed_lexical import LexicalEmbedder

SERVICES = (
    "billing", "search", "checkout", "inventory", "auth", "payments", "reporting",
    "notification", "shipping", "catalog", "gateway", "scheduler", "analytics", "export",
    "ingest", "archive", "mailer", "profile", "ledger", "pricing",
)  # fmt: skip
PEOPLE = ("Alice", "Bob", "Carol", "Dmitri", "Erin", "Farid", "Grace", "Hiro", "Ines", "Jonas")
DRINKS = ("tea", "coffee", "mate", "cocoa", "juice", "water", "kombucha", "lemonade")


def _dup_variants(text: str, i: int) -> list[str]:
    """Near-copies as a user or an agent would re-state a memory."""
    edits = [
        text.lower(),  # casing
        text.rstrip(".") + "!",  # punctuation
        text.replace("The ", "Note: the ", 1),  # a word added
        text.upper(),
        text.replace(" is ", " is currently ", 1) if " is " in text else text + " (confirmed)",
        text.replace(".", "") + " again.",  # punctuation and a word
    ]
    return [edits[i % len(edits)], edits[(i + 2) % len(edits)]][: 1 + i % 2]


@dataclass
class Planted:
    dup_groups: list[list[int]] = field(default_factory=list)  # first id: the original
    distinct: list[int] = field(default_factory=list)  # look-alikes that must stay apart
    updates: list[tuple[int, int]] = field(default_factory=list)  # (old, new)
    noise: list[int] = field(default_factory=list)


def plant(conn: apsw.Connection, now: float, *, ws: str = "default") -> Planted:
    p = Planted()
    t = now - 30 * DAY

    def add(text: str, kind: str = "fact", **kw: object) -> int:
        nonlocal t
        t += 60
        return remember(conn, text, t, kind=kind, workspace=ws, **kw)  # type: ignore[arg-type]

    # 1. Duplicates: one original and one or two near-copies each.
    for i, svc in enumerate(SERVICES[:14]):
        base = f"The {svc} service is owned by the platform team and deployed from the monorepo."
        if i % 2:
            base = f"The {svc} dashboard shows weekly totals grouped by region and customer tier."
        group = [add(base)]
        group += [add(v) for v in _dup_variants(base, i)]
        p.dup_groups.append(group)
    # 2. Look-alikes that must not merge: a substituted word (different fact)...
    for i, who in enumerate(PEOPLE):
        a, b = DRINKS[i % len(DRINKS)], DRINKS[(i + 3) % len(DRINKS)]
        p.distinct += [
            add(f"{who} prefers {a} during the morning standup.", "preference"),
            add(f"{who} prefers {b} during the morning standup.", "preference"),
        ]
    # ... a negation ...
    for svc in SERVICES[14:18]:
        p.distinct += [
            add(f"The {svc} service uses Redis for session caching."),
            add(f"The {svc} service doesn't use Redis for session caching."),
        ]
    # ... and another subject with the same value.
    for a, b in zip(SERVICES[:6], SERVICES[6:12], strict=True):
        p.distinct += [
            add(f"The {a} worker pool runs with 16 threads in production."),
            add(f"The {b} worker pool runs with 16 threads in production."),
        ]
    # 3. Fact updates: the same subject with a new value, the newer planted later.
    olds = []
    for i, svc in enumerate(SERVICES):
        fact = (
            f"The {svc} API listens on port {8000 + i}.",
            f"The {svc} database backups are kept for {7 + i} days.",
        )[i % 2]
        olds.append((svc, i, add(fact)))
    for svc, i, old in olds:
        fact = (
            f"The {svc} API listens on port {9000 + i}.",
            f"The {svc} database backups are kept for {30 + i} days.",
        )[i % 2]
        p.updates.append((old, add(fact)))
    # 4. Noise: unrelated memories.
    for i in range(40):
        svc = SERVICES[i % len(SERVICES)]
        p.noise.append(
            add(f"Incident {i}: {svc} latency spiked after release r{100 + i}; rolled back.")
        )
    return p


def embed_all(conn: apsw.Connection) -> str:
    """What the daemon's indexer stores: one lexical vector per memory."""
    emb = LexicalEmbedder()
    rows = conn.execute("SELECT id, content, content_hash FROM memories").fetchall()
    vecs = emb.embed([r[1] for r in rows])
    with conn:
        vectors.save(conn, emb.model_id, [(r[0], r[2], v) for r, v in zip(rows, vecs, strict=True)])
    return emb.model_id


@dataclass
class Score:
    precision: float
    recall: float
    supersede_correct: float
    false_supersede: int


def score(p: Planted, ops: list[object]) -> Score:
    group_of = {m: gi for gi, g in enumerate(p.dup_groups) for m in g}
    merged = [
        (op.canonical, s) for op in ops if isinstance(op, MergeDuplicates) for s in op.sources
    ]
    good = sum(1 for c, s in merged if c in group_of and group_of.get(s) == group_of[c])
    planted = sum(len(g) - 1 for g in p.dup_groups)
    sup = {(op.old_id, op.new_id) for op in ops if isinstance(op, Supersede)}
    right = sum(1 for pair in p.updates if pair in sup)
    return Score(
        precision=good / len(merged) if merged else 1.0,
        recall=good / planted,
        supersede_correct=right / len(p.updates),
        false_supersede=len(sup - set(p.updates)),
    )


def test_classify_rules() -> None:
    cfg = RemConfig()
    f = features
    a = f("The billing API listens on port 8080.")
    assert a.values == {"8080"} and a.words == {"bill", "api", "listen", "port"}
    assert classify(a, f("the billing api listens on PORT 8080"), 0.95, True, cfg) == "duplicate"
    assert classify(a, f("The billing API listens on port 9090."), 0.8, True, cfg) == "supersede"
    assert classify(a, f("The billing API listens on port 9090."), 0.8, False, cfg) is None
    assert classify(a, f("The search API listens on port 8080."), 0.95, True, cfg) is None
    assert classify(a, f("The billing API never listens on port 8080."), 0.95, True, cfg) is None
    assert classify(a, f("The biling API listens on port 8080."), 0.92, True, cfg) == "duplicate"
    assert classify(a, f("the billing api listens on port 8080"), 0.85, True, cfg) is None


def test_planted_store_precision_recall_and_supersession(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    p = plant(conn, now)
    embed_all(conn)
    plan = Rem().plan(conn, now)
    s = score(p, list(plan.ops))
    print(
        f"\nREM on the planted store: duplicate-merge precision {s.precision:.3f} "
        f"recall {s.recall:.3f}; supersession correct {s.supersede_correct:.3f} "
        f"({s.false_supersede} false); {plan.notes}"
    )
    assert s.precision >= 0.95 and s.recall >= 0.9
    assert s.supersede_correct >= 0.9 and s.false_supersede == 0
    touched = {i for op in plan.ops for i in _ids(op)}
    assert not touched & set(p.distinct + p.noise)  # look-alikes stay apart
    # The fallback without stored vectors (embedded on the fly) plans the same.
    (tmp_path / "bare").mkdir()
    conn2 = open_db(tmp_path / "bare")
    p2 = plant(conn2, now)
    assert msgspec.json.encode(Rem().plan(conn2, now).ops) == msgspec.json.encode(plan.ops)
    assert p2.dup_groups == p.dup_groups


def _searches(tmp_path: Path, queries: list[str]) -> list[list[int]]:
    conn = reader(tmp_path)
    try:
        return [
            [h.memory.id for h in search.search(conn, q, workspace=None, limit=50)] for q in queries
        ]
    finally:
        conn.close()


def test_dry_run_apply_undo_round_trip(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    p = plant(conn, now)
    embed_all(conn)
    before_dump = dump(conn)
    plan = Rem().plan(reader(tmp_path), now)  # the daemon plans on a reader connection
    assert dump(conn) == before_dump  # a dry run writes nothing...
    assert not (tmp_path / ledger.LEDGER_FILENAME).exists()  # ...not even the ledger
    before = memory_state(conn)
    seq_before = seqs(conn)
    queries = ["billing service owned platform team", "API listens port", "database backups"]
    searches_before = _searches(tmp_path, queries)

    report = apply_plan(plan, transact=transact_on(conn), data_dir=tmp_path, batch=7)
    assert report.status == "completed" and "skipped" not in report.counts
    state = {r[0]: r for r in memory_state(conn).values()}
    # No memory lost: every superseded memory points at an active survivor
    # (possibly through a chain), and the survivor's provenance lists it.
    superseded = {m: r for m, r in state.items() if r[8] == "superseded"}
    planted_sources = sum(len(g) - 1 for g in p.dup_groups) + len(p.updates)
    assert len(superseded) == planted_sources
    for mid, row in superseded.items():
        by = row[9]
        prov = json.loads(state[by][10])
        assert mid in prov.get("merged_from", []) + prov.get("supersedes", [])
        while state[by][8] != "active":
            by = state[by][9]
    for group in p.dup_groups:
        assert sum(state[m][8] == "active" for m in group) == 1
    for old, new in p.updates:
        assert state[old][8] == "superseded" and state[old][9] == new
    after_search = _searches(tmp_path, queries)
    assert not {m for hits in after_search for m in hits} & set(superseded)  # search hides them
    assert all(seqs(conn)[m][0] > seq_before[m][0] for m in superseded)  # the indexer follows

    # Nothing left to do: the next (incremental) run plans nothing.
    assert Rem().plan(conn, now + 60).ops == []

    result = undo(report.run_id, transact=transact_on(conn), data_dir=tmp_path)
    assert (result.reversed, result.conflicts) == (len(plan.ops), 0)
    after = memory_state(conn)
    created = set(after) - set(before)  # the summaries and the digest: purged tombstones
    assert len(created) == sum(not _ids(op) for op in plan.ops)
    assert all(after[m][8] == "forgotten" and after[m][4] == "" for m in created)
    assert {m: after[m] for m in before} == before
    assert _searches(tmp_path, queries) == searches_before
    assert [x["event"] for x in ledger.read_lines(tmp_path)] == ["run", "undo"]
    # After undo the same pairs are found again.
    again = Rem().plan(conn, now + 120)
    assert msgspec.json.encode(again.ops) == msgspec.json.encode(plan.ops)


def test_stale_plan_ops_are_skipped_and_pinned_never_superseded(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    a = remember(conn, "The deploy key rotates every 90 days.", now - 2 * DAY, kind="fact")
    b = remember(conn, "the deploy key rotates every 90 days", now - DAY, kind="fact")
    pinned_old = remember(
        conn, "The VPN gateway address is 10.0.0.1.", now - 3 * DAY, metadata={"pinned": True}
    )
    newer = remember(conn, "The VPN gateway address is 10.0.0.2.", now - DAY)
    plan = Rem().plan(conn, now)
    assert [type(op).__name__ for op in plan.ops] == ["MergeDuplicates", "WriteDigest"]
    assert plan.ops[0] == MergeDuplicates(
        canonical=a,
        sources=[b],
        similarity=plan.ops[0].similarity,  # type: ignore[union-attr]
    )
    assert pinned_old not in {i for op in plan.ops for i in _ids(op)} and newer
    with conn:
        conn.execute("UPDATE memories SET state = 'forgotten' WHERE id = ?", (b,))
    report = apply_plan(plan, transact=transact_on(conn))
    assert report.counts == {"skipped": 2}  # the merge, then the digest (nothing applied)


@pytest.mark.parametrize("incremental", [True, False])
def test_incremental_compares_only_changed_memories(tmp_path: Path, incremental: bool) -> None:
    conn = open_db(tmp_path)
    now = time.time()
    plant(conn, now)
    # `a` is there before the first run (nothing like it yet), and untouched since.
    a = remember(conn, "The ingest queue drains every 5 minutes.", now - DAY)
    cfg = RemConfig(incremental=incremental)
    ran = now + DAY
    first = Rem(cfg).plan(conn, ran)
    assert first.pending == [] and first.watermark == max(s for s, _ in seqs(conn).values())
    apply_plan(first, transact=transact_on(conn), clock=lambda: ran)
    # The survivors changed (their provenance) in that run: they are compared again.
    survivors = {
        _ids(op)[0 if isinstance(op, MergeDuplicates) else 1] for op in first.ops if _ids(op)
    }
    # `b` is new, written under a clock set back a day: still after the watermark.
    late = now - DAY
    b = remember(conn, "the ingest queue drains every 5 minutes!", late)
    plan = Rem(cfg).plan(conn, late)
    merges = [(op.canonical, op.sources) for op in plan.ops if isinstance(op, MergeDuplicates)]
    assert merges == [(a, [b])]
    changed = len(survivors) + 1 if incremental else plan.items
    assert f"compared {changed} changed of {plan.items} active" in plan.notes


def test_daemon_rem_run_hides_duplicates_and_undo_brings_them_back(short_tmp: Path) -> None:
    with Daemon(short_tmp) as d, d.client() as c:
        orig = c.remember("The release train leaves every Tuesday at 10:00.", kind="fact").id
        copy = c.remember("the release train leaves every Tuesday at 10:00!", kind="fact").id
        old = c.remember("The staging database runs Postgres 14.", kind="fact").id
        new = c.remember("The staging database runs Postgres 16.", kind="fact").id
        other = c.remember("The release train is paused in December.", kind="fact").id
        wait_indexed(c)

        def hits(q: str) -> set[int]:
            return {h.memory.id for h in c.search(q, limit=20).hits}

        assert {orig, copy} <= hits("release train Tuesday")
        assert {old, new} <= hits("staging database Postgres")
        dry: DreamsRunResult = c.call(DreamsRun(phase="rem", dry_run=True))
        rem_ops = {"merge_duplicates": 1, "supersede": 1, "write_digest": 1}
        assert dry.plan is not None and dry.plan.counts == rem_ops
        res: DreamsRunResult = c.call(DreamsRun(phase="rem"))
        assert res.report is not None and res.report.status == "completed"
        assert res.report.counts == rem_ops
        assert copy not in hits("release train Tuesday") and orig in hits("release train Tuesday")
        assert old not in hits("staging database Postgres")
        assert other in hits("release train")
        got = c.get(copy)
        assert got.state == "superseded" and got.superseded_by == orig
        assert c.get(old).superseded_by == new
        assert copy in c.get(orig).provenance["merged_from"]

        undone: UndoReport = c.call(DreamsUndo(run_id=res.report.run_id))
        assert (undone.reversed, undone.conflicts) == (3, 0)
        assert {orig, copy} <= hits("release train Tuesday")
        assert {old, new} <= hits("staging database Postgres")
        assert c.get(copy).state == "active" and c.get(copy).superseded_by is None


@pytest.mark.parametrize("lag", [False, True])
def test_index_path_gives_the_exact_plan(tmp_path: Path, lag: bool) -> None:
    """HNSW neighbours (index_min_cells=0 forces them) plan exactly what the exact path does.

    With `lag`, the index reflects only the older half of the store (as a
    daemon's indexer a moment behind the writes): the rest is compared exactly.
    """
    from reverie.store.indexer import IndexView
    from reverie.store.vector_index import HnswParams, VectorIndex

    conn = open_db(tmp_path)
    now = time.time()
    p = plant(conn, now)
    model = embed_all(conn)
    rows = conn.execute(
        "SELECT e.memory_id, e.vector, m.seq FROM embeddings e JOIN memories m "
        "ON m.id = e.memory_id WHERE e.model = ? ORDER BY m.seq",
        (model,),
    ).fetchall()
    if lag:
        rows = rows[: len(rows) // 2]
    seq = int(rows[-1][2])
    index = VectorIndex(384, model_id=model, params=HnswParams(capacity=len(rows) + 16))
    index.add([r[0] for r in rows], np.stack([np.frombuffer(r[1], "<f4") for r in rows]))
    asked: list[tuple[str, str]] = []

    def view(m: str, ws: str) -> IndexView:
        asked.append((m, ws))
        return IndexView(seq, index.query_many)

    exact = Rem().plan(conn, now)
    via = Rem(RemConfig(index_min_cells=0), index=view).plan(conn, now)
    assert asked == [(model, "default")]
    assert "through the vector index" in via.notes
    assert via.notes.startswith(exact.notes + "; 1 workspaces through the vector index (")
    assert [msgspec.to_builtins(o) for o in via.ops] == [msgspec.to_builtins(o) for o in exact.ops]
    assert score(p, list(via.ops)).recall >= 0.9


@pytest.mark.parametrize("n_dirty", [10, 300])  # the few-rows path, and the permuted one
def test_candidate_pairs_match_brute_force(n_dirty: int) -> None:
    from reverie.phases.rem_pairs import RowVectors, candidate_pairs

    rng = np.random.default_rng(3)
    base = rng.normal(size=(200, 32)).astype(np.float32)
    vecs = np.concatenate([base, base[:200] + 0.3 * rng.normal(size=(200, 32)).astype(np.float32)])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    n = len(vecs)
    dirty = np.zeros(n, dtype=bool)
    dirty[rng.choice(n, n_dirty, replace=False)] = True
    sims = vecs @ vecs.T
    want = {
        (a, b) if dirty[a] else (b, a)
        for a in range(n)
        for b in range(a + 1, n)
        if sims[a, b] >= 0.9 and (dirty[a] or dirty[b])
    }
    ids = np.arange(n, dtype=np.int64)
    got, used = candidate_pairs(
        RowVectors.dense(vecs),
        ids,
        ids,
        dirty,
        0.9,
        block_cells=4000,
        index_k=8,
        index_min_cells=10**9,
        view=None,
    )
    assert not used and {(a, b) for a, b, _ in got} == want and len(got) == len(want) > 5
