"""REM: merge near-duplicate memories and let newer facts supersede older ones.

Candidates. Per workspace, the active memories (archived ones, the
`exclude_kinds` and hook observations of a session left out) are compared by
exact cosine over their stored vectors: those of the model with the most
rows in `embeddings` (the one the daemon indexes with), reused only while
their content hash still matches; a memory without a current vector is
embedded here when that model can be rebuilt locally (the lexical one always
can), else skipped. Only memories changed since the last completed REM run
are compared (against everything in their workspace); the first run, or
`incremental = false`, compares all of them. Exactly, in row blocks (an n x
n matrix is never built), or, in the daemon over a large workspace, through
its HNSW index (rem_pairs.py says when and measures both).

Confirmation (rem_rules.py). Every candidate pair goes through a lexical
check of its content words, values (tokens with a digit) and negation: a
*duplicate* differs by a few added words at most, a *supersession* (same
kind) by exactly one changed value; a substituted word is another fact,
and neither rule fires. The older one of a supersession (observed_at, then
id) is superseded by the newer.

Merging. Duplicate pairs are clustered (union-find); each cluster keeps one
canonical memory, chosen by (pinned first, most recalled, oldest, lowest
id): the one retrieval already returns, and a stable choice across runs.
The others become superseded by it; its provenance.merged_from lists
them. Recall counts are not summed: recall_count/distinct_queries count
rows of the `recalls` table for that memory, and a sum would break that
(light sleep's scores read it); the sources stay reachable instead. Pinned
memories are never superseded (a pair of two pinned memories is skipped).
Supersession runs over what remains after merging (a merged source's
pairs count for its canonical); a group of the same subject keeps its
newest member and every older one points at it.

Clusters and digest (rem_clusters.py). After the merges, related memories
(a lower cosine, shared content words) form clusters that get one
consolidated `summary` each, and a run that changed anything ends with a
`digest`. REM's own summaries and digests (metadata.phase = "rem") are
never candidates. With `[dreams.rem.llm]`, `refine` has the model write the
summaries' text before a non-dry run applies the plan (service.py).

Reads (rem_view.py). An incremental run reads the rows of the workspaces
with a changed memory only (the rest is counted), and through the index
only the vectors it needs (rem_pairs.RowVectors); the exact path reads the
workspace's.

The plan is a pure function of the database, `now` and the config (with
the index, of its neighbours too: HNSW recall is near 1, not exactly 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import apsw
import numpy as np
import numpy.typing as npt
from reverie.phases import rem_clusters
from reverie.phases.cancel import NEVER, Cancel
from reverie.phases.ops import Op
from reverie.phases.ops_rem import MergeDuplicates, SummarizeCluster, Supersede, WriteDigest
from reverie.phases.rem_clusters import UnionFind
from reverie.phases.rem_pairs import RowVectors, candidate_pairs, uses_index
from reverie.phases.rem_rules import Features, classify, features
from reverie.phases.rem_view import (
    Mem,
    changed_since,
    fetcher,
    read_candidates,
    rem_summaries,
    store_model,
    watermark,
)
from reverie.phases.runner import Plan
from reverie.phases.settings import RemConfig as RemConfig  # one class, [dreams.rem]
from reverie.store.embed_lexical import LexicalEmbedder
from reverie.store.embedding import embedder_for_model
from reverie.store.indexer import IndexView

# (model, workspace) -> the daemon's index for it, or None (not ready, other model).
ViewSource = Callable[[str, str], IndexView | None]


@dataclass(slots=True)
class _Space:
    """One workspace's candidates, kept for the cluster search's further rounds."""

    ws: str
    mems: list[Mem]
    vecs: RowVectors
    view: IndexView | None
    pairs: list[tuple[int, int, float]]


class Rem:
    name = "rem"

    def __init__(self, cfg: RemConfig | None = None, *, index: ViewSource | None = None) -> None:
        self.cfg = cfg or RemConfig()
        self.index = index  # the daemon's HNSW index; None: exact comparison only

    def plan(self, conn: apsw.Connection, now: float, cancel: Cancel = NEVER) -> Plan:
        """The plan; `cancel` is checked between blocks and batches (phases/cancel.py)."""
        cfg = self.cfg
        model = store_model(conn)
        embedder = embedder_for_model(model) if model else LexicalEmbedder()
        model = model or (embedder.model_id if embedder else None)
        since = changed_since(conn, cfg)
        mark = watermark(conn)
        by_ws, items_total = read_candidates(conn, cfg, model, since, cancel)
        mems: dict[int, Mem] = {}
        pairs: list[tuple[int, int, float]] = []
        spaces: list[_Space] = []
        # Changed memories this run leaves uncompared (caps, no vector yet): the
        # next run counts them changed again (rem_view.Since).
        pending: set[int] = set()
        skipped = via_index = read = 0
        todo = list(by_ws.items())
        for k, (ws, items) in enumerate(todo):
            cancel.check()
            if len(pairs) >= cfg.max_pairs:  # the pair cap: the rest waits
                pending.update(m.id for _, rest in todo[k:] for m, _ in rest if m.dirty)
                break
            if not any(m.dirty for m, _ in items):
                continue
            missing = sum(not has for _, has in items)
            if missing and embedder is None:
                pending.update(m.id for m, has in items if m.dirty and not has)
                items = [it for it in items if it[1]]
                skipped += missing
            if len(items) < 2:
                continue
            ws_mems = [m for m, _ in items]
            mems.update((m.id, m) for m in ws_mems)
            view = self.index(model, ws) if self.index is not None and model else None
            vecs = RowVectors(len(ws_mems), fetcher(conn, model, embedder, ws_mems, cancel))
            n_dirty = sum(m.dirty for m in ws_mems)
            if view is None or not uses_index(len(ws_mems), n_dirty, cfg.index_min_cells):
                vecs = RowVectors.dense(vecs.all())  # the exact path compares every row
            read += vecs.loaded
            found, used, cut = _pairs(ws_mems, vecs, cfg, cfg.max_pairs - len(pairs), view, cancel)
            pending |= cut
            spaces.append(_Space(ws, ws_mems, vecs, view, found))
            pairs += found
            via_index += used
        cancel.check()
        ops, dups, sups, dropped = self._ops(mems, pairs, cancel)
        pending |= dropped
        notes = (
            f"compared {sum(m.dirty for m in mems.values())} changed of {items_total} active "
            f"memories ({model}); {len(pairs)} candidate pairs; "
            f"merged {dups} duplicates, superseded {sups} outdated facts"
        )
        if cfg.cluster_summaries:
            summaries, waiting, note = self._summaries(conn, spaces, ops, since is None, cancel)
            ops += summaries
            pending |= waiting
            notes += f"; {note}"
        if via_index:
            loaded = sum(s.vecs.loaded for s in spaces)
            notes += f"; {via_index} workspaces through the vector index ({loaded} vectors read)"
        if skipped:
            notes += f"; {skipped} memories without a {model} vector skipped"
        if pending:
            notes += f"; {len(pending)} changed memories left for the next run"
        if ops and cfg.digest:
            ops.append(_digest_op(ops, spaces))
        llm_note = rem_clusters.dry_run_note(ops, cfg)
        if llm_note:
            notes += f"; {llm_note}"
        return Plan(
            phase=self.name,
            ops=ops,
            items=items_total,
            notes=notes,
            watermark=mark,
            pending=sorted(pending),
        )

    def _summaries(
        self,
        conn: apsw.Connection,
        spaces: list[_Space],
        ops: list[Op],
        full: bool,
        cancel: Cancel = NEVER,
    ) -> tuple[list[Op], set[int], str]:
        """Cluster summary ops per workspace (rem_clusters.py), the members of the
        clusters the cap leaves for the next run, and a note."""
        cfg = self.cfg
        survivor: dict[int, int] = {}
        for op in ops:
            if isinstance(op, MergeDuplicates):
                survivor.update((s, op.canonical) for s in op.sources)
            elif isinstance(op, Supersede):
                survivor[op.old_id] = op.new_id

        def surv(i: int) -> int:
            seen = 0
            while i in survivor and seen < 64:  # chains are short; a cycle is impossible
                i, seen = survivor[i], seen + 1
            return i

        existing = rem_summaries(conn)
        out: list[SummarizeCluster] = []
        big = 0
        for space in spaces:
            cancel.check()
            comps, n_big = self._components(space, surv, full, cancel)
            big += n_big
            ids = {i for comp in comps for i in comp}
            members = {
                m.id: rem_clusters.Member(m.id, m.kind, m.content, m.observed_at)
                for m in space.mems
                if m.id in ids
            }
            out += rem_clusters.plan_summaries(
                space.ws, comps, members, existing.get(space.ws, {}), cfg
            )
        note = f"{min(len(out), cfg.max_summaries)} cluster summaries"
        if len(out) > cfg.max_summaries:
            note += f" ({len(out) - cfg.max_summaries} more wait for the next run)"
        if big:
            note += f"; {big} clusters above {cfg.cluster_max_size} memories left alone"
        waiting = {m for op in out[cfg.max_summaries :] for m in op.members}
        return list(out[: cfg.max_summaries]), waiting, note

    def _components(
        self, space: _Space, surv: Callable[[int], int], full: bool, cancel: Cancel = NEVER
    ) -> tuple[list[list[int]], int]:
        """The closed clusters (survivor ids) reached from a workspace's changed memories."""
        cfg = self.cfg
        by_id = {m.id: m for m in space.mems}
        row_of = {m.id: r for r, m in enumerate(space.mems)}

        def related(found: Iterable[tuple[int, int, float]]) -> list[tuple[int, int]]:
            edges = []
            for a, b, cos in found:
                if cos < cfg.cluster_threshold:
                    continue
                fa, fb = features(by_id[a].content), features(by_id[b].content)
                shared = len(fa.words & fb.words)
                if (
                    shared >= cfg.cluster_min_shared_words
                    and shared >= cfg.cluster_min_jaccard * len(fa.words | fb.words)
                ):
                    sa, sb = surv(a), surv(b)
                    if sa != sb:
                        edges.append((sa, sb))
            return edges

        def expand(ids: list[int]) -> list[tuple[int, int]]:
            mask = np.zeros(len(space.mems), dtype=bool)
            mask[[row_of[i] for i in ids if i in row_of]] = True
            found, _, _ = _pairs(
                space.mems, space.vecs, cfg, cfg.max_pairs, space.view, cancel, mask
            )
            return related(found)

        done = None if full else {m.id for m in space.mems if m.dirty}
        return rem_clusters.components(related(space.pairs), done, expand, cfg.cluster_max_size)

    def summary_inputs(self, conn: apsw.Connection, plan: Plan) -> dict[int, rem_clusters.Member]:
        """The member texts the LLM path needs (read before it, on a reader)."""
        ids = sorted({m for op in plan.ops if isinstance(op, SummarizeCluster) for m in op.members})
        out: dict[int, rem_clusters.Member] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for mid, kind, content, observed in conn.execute(
                f"SELECT id, kind, content, observed_at FROM memories WHERE id IN ({marks})",
                chunk,
            ):
                out[int(mid)] = rem_clusters.Member(int(mid), str(kind), str(content), observed)
        return out

    def refine(
        self, plan: Plan, texts: dict[int, rem_clusters.Member], cancel: Cancel = NEVER
    ) -> Plan:
        """A non-dry run's plan with the LLM's cluster summaries (no-op without [dreams.rem.llm]).

        Blocking HTTP: call it in a worker thread, outside any transaction.
        """
        if not self.cfg.llm.url:
            return plan
        ops, note = rem_clusters.refine(list(plan.ops), texts, self.cfg, cancel=cancel)
        notes = plan.notes
        dry = rem_clusters.dry_run_note(plan.ops, self.cfg)
        if dry:
            notes = notes.replace(f"; {dry}", "")
        if note:
            notes += f"; {note}"
        return Plan(
            phase=plan.phase,
            ops=ops,
            items=plan.items,
            notes=notes,
            watermark=plan.watermark,
            pending=plan.pending,
        )

    def _ops(
        self, mems: dict[int, Mem], pairs: list[tuple[int, int, float]], cancel: Cancel = NEVER
    ) -> tuple[list[Op], int, int, set[int]]:
        """The merge and supersede ops (at most `max_ops`), how many of each, and
        the memories of the ops past the cap (left for the next run)."""
        cfg = self.cfg
        dup = UnionFind()
        dup_members: set[int] = set()
        sup_edges: list[tuple[int, int, Features, Features]] = []
        cosine: dict[tuple[int, int], float] = {}
        for n, (a, b, cos) in enumerate(pairs, 1):
            cancel.every(n)  # up to max_pairs lexical checks
            ma, mb = mems[a], mems[b]
            fa, fb = features(ma.content), features(mb.content)
            verdict = classify(fa, fb, cos, ma.kind == mb.kind, cfg)
            if verdict == "duplicate" and not (ma.pinned and mb.pinned):
                dup.union(a, b)
                dup_members |= {a, b}
                cosine[(a, b)] = cosine[(b, a)] = cos
            elif verdict == "supersede":
                sup_edges.append((a, b, fa, fb))
        ops: list[Op] = []
        canon: dict[int, int] = {}
        for group in dup.groups(dup_members):
            head = min(group, key=lambda i: _keep_key(mems[i]))
            rest = [i for i in group if i != head and not mems[i].pinned]
            canon.update((i, head) for i in group)
            if rest:
                sims = [round(cosine.get((head, i), 0.0), 4) for i in rest]
                ops.append(MergeDuplicates(canonical=head, sources=rest, similarity=sims))
        dups = sum(len(op.sources) for op in ops if isinstance(op, MergeDuplicates))
        sup = UnionFind()
        members: set[int] = set()
        values: dict[int, frozenset[str]] = {}
        for a, b, fa, fb in sup_edges:
            ca, cb = canon.get(a, a), canon.get(b, b)
            if ca != cb:
                sup.union(ca, cb)
                members |= {ca, cb}
                values.setdefault(ca, fa.values if ca == a else features(mems[ca].content).values)
                values.setdefault(cb, fb.values if cb == b else features(mems[cb].content).values)
        sups = 0
        for group in sup.groups(members):
            newest = max(group, key=lambda i: (mems[i].observed_at, i))
            for old in group:
                if old == newest or mems[old].pinned:
                    continue
                ops.append(
                    Supersede(
                        old_id=old,
                        new_id=newest,
                        old_values=sorted(values.get(old, ())),
                        new_values=sorted(values.get(newest, ())),
                    )
                )
                sups += 1
        dropped = {i for op in ops[cfg.max_ops :] for i in touched_ids(op)}
        return ops[: cfg.max_ops], dups, sups, dropped


def touched_ids(op: Op) -> list[int]:
    """The memories a merge or supersede op touches (cluster summaries only read theirs)."""
    if isinstance(op, MergeDuplicates):
        return [op.canonical, *op.sources]
    if isinstance(op, Supersede):
        return [op.old_id, op.new_id]
    return []


def _keep_key(m: Mem) -> tuple[Any, ...]:
    return (not m.pinned, -m.recall_count, m.observed_at, m.id)


def _pairs(
    mems: list[Mem],
    vecs: RowVectors,
    cfg: RemConfig,
    budget: int,
    view: IndexView | None,
    cancel: Cancel = NEVER,
    dirty: npt.NDArray[np.bool_] | None = None,
) -> tuple[list[tuple[int, int, float]], bool, set[int]]:
    """(id, id, cosine) of every pair above the lower threshold with a changed member.

    In the order of rem_pairs.candidate_pairs (changed member first), at
    most `budget`; whether the index found them; and the changed memories
    whose pairs the budget cut (`_cut`).
    """
    if len(mems) < 2 or budget <= 0:
        return [], False, set()
    changed = np.array([m.dirty for m in mems], dtype=bool) if dirty is None else dirty
    found, used = candidate_pairs(
        vecs,
        np.array([m.id for m in mems], dtype=np.int64),
        np.array([m.seq for m in mems], dtype=np.int64),
        changed,
        _floor(cfg),
        block_cells=cfg.block_cells,
        index_k=cfg.index_k,
        index_min_cells=cfg.index_min_cells,
        view=view,
        cancel=cancel,
    )
    cut = _cut(found, budget, changed)
    return (
        [(mems[a].id, mems[b].id, cos) for a, b, cos in found[:budget]],
        used,
        {mems[r].id for r in cut},
    )


def _cut(
    found: list[tuple[int, int, float]], budget: int, changed: npt.NDArray[np.bool_]
) -> list[int]:
    """The changed rows not all of whose pairs fit in `budget`.

    `found` is sorted by its first row, a changed one (candidate_pairs): when
    the budget ends at a pair of row c, every changed row before c has all its
    pairs kept (a pair of two changed rows is listed under the lower one).
    Row c counts as done when it is the first changed row, so that each run
    completes at least one (its pairs past the budget are then not looked at).
    """
    if len(found) <= budget:
        return []
    c = found[budget][0]
    rows = np.flatnonzero(changed)
    first = not bool((rows < c).any())
    return [int(r) for r in rows if r > c or (r == c and not first)]


def _floor(cfg: RemConfig) -> float:
    """The lowest cosine any rule looks at."""
    floor = min(cfg.duplicate_threshold, cfg.supersede_threshold)
    return min(floor, cfg.cluster_threshold) if cfg.cluster_summaries else floor


def _digest_op(ops: list[Op], spaces: list[_Space]) -> WriteDigest:
    """The run's digest, in the workspace it changed (several: "default")."""
    counts: dict[str, int] = {}
    for op in ops:
        tag = str(type(op).__struct_config__.tag)
        counts[tag] = counts.get(tag, 0) + 1
    ws_of = {m.id: s.ws for s in spaces for m in s.mems}
    touched: set[str] = set()
    for op in ops:
        if isinstance(op, MergeDuplicates):
            touched.add(ws_of.get(op.canonical, "default"))
        elif isinstance(op, Supersede):
            touched.add(ws_of.get(op.new_id, "default"))
        elif isinstance(op, SummarizeCluster):
            touched.add(op.workspace)
    ws = touched.pop() if len(touched) == 1 else "default"
    return WriteDigest(workspace=ws, planned=counts)
