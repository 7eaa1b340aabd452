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

Confirmation. Every candidate pair goes through a lexical check on its
*content words* (tokens minus stopwords, Porter-stemmed: the store's own
stemmer), its *values* (tokens with a digit: ports, versions, dates,
amounts) and its *negation* (not, no, never, n't...). Two words that are
one edit apart (typos) count as the same word. Then:

* duplicate: cosine >= `duplicate_threshold`, same values, same negation,
  and the word sets differ only by added words on one side (no word
  substituted for another), at most `max(1, added_fraction * |union|)`;
* supersession: cosine >= `supersede_threshold`, same kind, same negation,
  the same content words (no word added), at least `min_subject_words` of
  them, and exactly one value changed (one value on each side that the
  other lacks): "the billing API listens on port 8080" then "... on port
  9090". The older one (observed_at, then id) is superseded by the newer.
  Two changed values ("Incident 3: ... release r103" / "Incident 9: ...
  release r109") read as two records, not an update.

A word substituted ("Alice prefers tea" / "Alice prefers coffee") is a
different fact, and neither rule fires: without a model of meaning, the
safe reading of a changed word is "another fact", and a wrong merge hides a
memory from search while a missed one only leaves a near-copy visible.

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

Reads. An incremental run reads the rows of the workspaces with a changed
memory only (the rest is counted), and through the index only the vectors
it needs (rem_pairs.RowVectors); the exact path reads the workspace's.

The plan is a pure function of the database, `now` and the config (with
the index, of its neighbours too: HNSW recall is near 1, not exactly 1).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import apsw
import msgspec
import numpy as np
import numpy.typing as npt
from reverie.phases import rem_clusters
from reverie.phases.cancel import NEVER, ROWS, Cancel
from reverie.phases.ops import Op
from reverie.phases.ops_rem import MergeDuplicates, SummarizeCluster, Supersede, WriteDigest
from reverie.phases.rem_pairs import RowVectors, candidate_pairs, uses_index
from reverie.phases.runner import Plan
from reverie.phases.settings import RemConfig as RemConfig  # one class, [dreams.rem]
from reverie.store.embed_lexical import IRREGULAR, STOPWORDS, LexicalEmbedder, porter_stem, tokens
from reverie.store.embedding import embedder_for_model
from reverie.store.indexer import IndexView

Floats = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
_json = msgspec.json.Encoder()
# (model, workspace) -> the daemon's index for it, or None (not ready, other model).
ViewSource = Callable[[str, str], IndexView | None]


_VALUE = re.compile(r"[\w.:/@+-]*\d[\w.:/@+-]*")
_NEGATION = re.compile(r"\b(?:not|no|never|nor|none|nothing|without|cannot|\w+n['\u2019]t)\b", re.I)


@dataclass(frozen=True, slots=True)
class Features:
    words: frozenset[str]
    values: frozenset[str]
    negated: bool


@functools.lru_cache(maxsize=65536)
def features(text: str) -> Features:
    """Content-word stems, values and negation parity of a text."""
    values = frozenset(v.strip(".:/-+").lower() for v in _VALUE.findall(text))
    rest = _VALUE.sub(" ", text)
    words = frozenset(porter_stem(IRREGULAR.get(t, t)) for t in tokens(rest) if t not in STOPWORDS)
    return Features(words, values, len(_NEGATION.findall(text)) % 2 == 1)


def _one_edit(a: str, b: str) -> bool:
    """Whether a and b (>= 4 chars) are one substitution, insertion or deletion apart."""
    if min(len(a), len(b)) < 4 or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]


def word_diff(a: frozenset[str], b: frozenset[str]) -> tuple[set[str], set[str]]:
    """Words only in a, only in b, after pairing off typos (one edit apart)."""
    only_a, only_b = set(a - b), set(b - a)
    for x in sorted(only_a):
        y = next((y for y in sorted(only_b) if _one_edit(x, y)), None)
        if y is not None:
            only_a.discard(x)
            only_b.discard(y)
    return only_a, only_b


def classify(fa: Features, fb: Features, cos: float, same_kind: bool, cfg: RemConfig) -> str | None:
    """'duplicate', 'supersede' or None for one candidate pair (see the module doc)."""
    if fa.negated != fb.negated:
        return None
    only_a, only_b = word_diff(fa.words, fb.words)
    if only_a and only_b:
        return None  # a word substituted: another fact
    added = len(only_a) + len(only_b)
    if added > max(1, int(cfg.added_fraction * len(fa.words | fb.words))):
        return None
    if fa.values == fb.values:
        return "duplicate" if cos >= cfg.duplicate_threshold else None
    if (
        same_kind
        and cos >= cfg.supersede_threshold
        and len(fa.values - fb.values) == 1
        and len(fb.values - fa.values) == 1
        and added == 0
        and len(fa.words) >= cfg.min_subject_words
    ):
        return "supersede"
    return None


class _Find:
    """Union-find over row indices."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self, members: set[int]) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for m in sorted(members):
            out.setdefault(self.find(m), []).append(m)
        return [g for g in out.values() if len(g) > 1]


@dataclass(slots=True)
class _Mem:
    id: int
    kind: str
    content: str
    observed_at: float
    recall_count: int
    pinned: bool
    dirty: bool
    seq: int


def _model(conn: apsw.Connection) -> str | None:
    row = conn.execute(
        "SELECT model FROM embeddings GROUP BY model ORDER BY count(*) DESC, model LIMIT 1"
    ).fetchone()
    return str(row[0]) if row else None


def _since(conn: apsw.Connection, cfg: RemConfig) -> float | None:
    """Memories updated after this are 'changed since the last REM run' (None: all)."""
    if not cfg.incremental:
        return None
    row = conn.execute(
        "SELECT max(started_at) FROM dream_runs WHERE phase = 'rem' AND status = 'completed'"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return float(row[0]) - cfg.rescan_margin_s


@dataclass(slots=True)
class _Space:
    """One workspace's candidates, kept for the cluster search's further rounds."""

    ws: str
    mems: list[_Mem]
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
        model = _model(conn)
        embedder = embedder_for_model(model) if model else LexicalEmbedder()
        model = model or (embedder.model_id if embedder else None)
        since = _since(conn, cfg)
        kinds = ",".join("?" * len(cfg.exclude_kinds))
        # REM's own summaries and digests are derived data: never candidates
        # (a summary would cluster with its members, a digest with the last one).
        where = (
            "m.state = 'active' AND m.tier != 'archived' "
            f"AND m.kind NOT IN ({kinds}) AND NOT (? AND m.kind = 'observation' "
            "AND json_extract(m.metadata, '$.session_id') IS NOT NULL) "
            "AND json_extract(m.metadata, '$.phase') IS NOT 'rem'"
        )
        args = (*cfg.exclude_kinds, cfg.skip_session_observations)
        scope = ""
        total: int | None = None
        if since is not None:
            # Incremental: only the workspaces with a changed memory are read
            # (rows and vectors); the others only counted.
            count, changed = conn.execute(  # one row, always
                f"SELECT count(*), json_group_array(DISTINCT CASE WHEN m.updated_at >= ? "
                f"THEN m.workspace END) FROM memories m WHERE {where}",
                (since, *args),
            ).fetchall()[0]
            total = int(str(count))
            spaces_ws = [w for w in json.loads(str(changed)) if w is not None]
            scope = f" AND m.workspace IN ({','.join('?' * len(spaces_ws))})"
            args = (*args, *spaces_ws)
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT m.id, m.workspace, m.kind, m.content, m.observed_at, m.recall_count, "
            "json_extract(m.metadata, '$.pinned'), m.updated_at, m.seq, "
            "e.content_hash IS m.content_hash "  # a current vector (read later, if needed)
            "FROM memories m LEFT JOIN embeddings e ON e.memory_id = m.id AND e.model = ? "
            f"WHERE {where}{scope} ORDER BY m.workspace, m.id",
            (model, *args),
        ).fetchall()
        items_total = len(rows) if total is None else int(total)
        cancel.check()
        by_ws: dict[str, list[tuple[_Mem, bool]]] = {}
        for n, (mid, ws, kind, content, observed, rcount, pinned, updated, seq, has) in enumerate(
            rows, 1
        ):
            cancel.every(n)
            mem = _Mem(
                int(mid),
                str(kind),
                str(content),
                float(observed),
                int(rcount),
                bool(pinned),
                since is None or float(updated) >= since,
                int(seq),
            )
            by_ws.setdefault(str(ws), []).append((mem, bool(has)))
        mems: dict[int, _Mem] = {}
        pairs: list[tuple[int, int, float]] = []
        spaces: list[_Space] = []
        skipped = via_index = read = 0
        for ws, items in by_ws.items():
            cancel.check()
            if not any(m.dirty for m, _ in items):
                continue
            missing = sum(not has for _, has in items)
            if missing and embedder is None:
                items = [it for it in items if it[1]]
                skipped += missing
            if len(items) < 2:
                continue
            ws_mems = [m for m, _ in items]
            mems.update((m.id, m) for m in ws_mems)
            view = self.index(model, ws) if self.index is not None and model else None
            vecs = RowVectors(len(ws_mems), _fetcher(conn, model, embedder, ws_mems, cancel))
            n_dirty = sum(m.dirty for m in ws_mems)
            if view is None or not uses_index(len(ws_mems), n_dirty, cfg.index_min_cells):
                vecs = RowVectors.dense(vecs.all())  # the exact path compares every row
            read += vecs.loaded
            found, used = _pairs(ws_mems, vecs, cfg, cfg.max_pairs - len(pairs), view, cancel)
            spaces.append(_Space(ws, ws_mems, vecs, view, found))
            pairs += found
            via_index += used
            if len(pairs) >= cfg.max_pairs:
                break
        cancel.check()
        ops, dups, sups = self._ops(mems, pairs, cancel)
        notes = (
            f"compared {sum(m.dirty for m in mems.values())} changed of {items_total} active "
            f"memories ({model}); {len(pairs)} candidate pairs; "
            f"merged {dups} duplicates, superseded {sups} outdated facts"
        )
        if cfg.cluster_summaries:
            summaries, note = self._summaries(conn, spaces, ops, since is None, cancel)
            ops += summaries
            notes += f"; {note}"
        if via_index:
            loaded = sum(s.vecs.loaded for s in spaces)
            notes += f"; {via_index} workspaces through the vector index ({loaded} vectors read)"
        if skipped:
            notes += f"; {skipped} memories without a {model} vector skipped"
        if ops and cfg.digest:
            ops.append(_digest_op(ops, spaces))
        llm_note = rem_clusters.dry_run_note(ops, cfg)
        if llm_note:
            notes += f"; {llm_note}"
        return Plan(phase=self.name, ops=ops, items=items_total, notes=notes)

    def _summaries(
        self,
        conn: apsw.Connection,
        spaces: list[_Space],
        ops: list[Op],
        full: bool,
        cancel: Cancel = NEVER,
    ) -> tuple[list[Op], str]:
        """Cluster summary ops per workspace (rem_clusters.py), and a note."""
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

        existing = _rem_summaries(conn)
        out: list[Op] = []
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
        return out[: cfg.max_summaries], note

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
            found, _ = _pairs(space.mems, space.vecs, cfg, cfg.max_pairs, space.view, cancel, mask)
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
        return Plan(phase=plan.phase, ops=ops, items=plan.items, notes=notes)

    def _ops(
        self, mems: dict[int, _Mem], pairs: list[tuple[int, int, float]], cancel: Cancel = NEVER
    ) -> tuple[list[Op], int, int]:
        cfg = self.cfg
        dup = _Find()
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
        sup = _Find()
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
        return ops[: cfg.max_ops], dups, sups


def _keep_key(m: _Mem) -> tuple[Any, ...]:
    return (not m.pinned, -m.recall_count, m.observed_at, m.id)


def _fetcher(
    conn: apsw.Connection,
    model: str | None,
    embedder: Any,
    mems: list[_Mem],
    cancel: Cancel = NEVER,
) -> Callable[[Ids], Floats]:
    """Rows -> their current stored vectors; a row without one is embedded here
    (in batches, `cancel` checked between them: a local model takes ms a text)."""

    def fetch(rows: Ids) -> Floats:
        want = [mems[r].id for r in rows.tolist()]
        blobs: dict[int, bytes] = {}
        for i in range(0, len(want), 50_000):
            cancel.check()
            chunk = _json.encode(want[i : i + 50_000]).decode()
            for mid, blob in conn.execute(
                "SELECT m.id, e.vector FROM memories m JOIN embeddings e "
                "ON e.memory_id = m.id AND e.model = ? AND e.content_hash = m.content_hash "
                "WHERE m.id IN (SELECT value FROM json_each(?))",
                (model, chunk),
            ):
                blobs[int(mid)] = blob
        missing = [i for i, mid in enumerate(want) if mid not in blobs]
        fresh = _embed(embedder, [mems[rows[i]].content for i in missing], cancel)
        dim = fresh.shape[1] if fresh is not None else len(next(iter(blobs.values()))) // 4
        out = np.empty((len(want), dim), dtype=np.float32)
        for i, mid in enumerate(want):
            blob = blobs.get(mid)
            if blob is not None:
                out[i] = np.frombuffer(blob, dtype="<f4")
        if fresh is not None:
            out[missing] = fresh
        return out

    return fetch


def _embed(embedder: Any, texts: list[str], cancel: Cancel) -> Floats | None:
    """`embedder.embed(texts)` in batches of ROWS between cancel checks (None: no texts)."""
    if not texts:
        return None
    parts = []
    for i in range(0, len(texts), ROWS):
        cancel.check()
        parts.append(np.asarray(embedder.embed(texts[i : i + ROWS]), dtype=np.float32))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _pairs(
    mems: list[_Mem],
    vecs: RowVectors,
    cfg: RemConfig,
    budget: int,
    view: IndexView | None,
    cancel: Cancel = NEVER,
    dirty: npt.NDArray[np.bool_] | None = None,
) -> tuple[list[tuple[int, int, float]], bool]:
    """(id, id, cosine) of every pair above the lower threshold with a changed member.

    In the order of rem_pairs.candidate_pairs (changed member first), at
    most `budget`; and whether the index found them.
    """
    if len(mems) < 2 or budget <= 0:
        return [], False
    found, used = candidate_pairs(
        vecs,
        np.array([m.id for m in mems], dtype=np.int64),
        np.array([m.seq for m in mems], dtype=np.int64),
        np.array([m.dirty for m in mems], dtype=bool) if dirty is None else dirty,
        _floor(cfg),
        block_cells=cfg.block_cells,
        index_k=cfg.index_k,
        index_min_cells=cfg.index_min_cells,
        view=view,
        cancel=cancel,
    )
    return [(mems[a].id, mems[b].id, cos) for a, b, cos in found[:budget]], used


def _floor(cfg: RemConfig) -> float:
    """The lowest cosine any rule looks at."""
    floor = min(cfg.duplicate_threshold, cfg.supersede_threshold)
    return min(floor, cfg.cluster_threshold) if cfg.cluster_summaries else floor


def _rem_summaries(conn: apsw.Connection) -> dict[str, dict[int, frozenset[int]]]:
    """Active REM cluster summaries: workspace -> summary id -> member ids."""
    out: dict[str, dict[int, frozenset[int]]] = {}
    for sid, ws, prov in conn.execute(
        "SELECT id, workspace, provenance FROM memories WHERE state = 'active' "
        "AND kind = 'summary' AND json_extract(metadata, '$.phase') = 'rem'"
    ):
        mids = json.loads(str(prov)).get("memories", [])
        out.setdefault(str(ws), {})[int(sid)] = frozenset(int(m) for m in mids)
    return out


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


def provenance_sources(conn: apsw.Connection, memory_id: int) -> list[int]:
    """The memories a survivor absorbed (merged_from and supersedes), for reachability."""
    prov = json.loads(
        str(conn.execute("SELECT provenance FROM memories WHERE id = ?", (memory_id,)).get)
    )
    return [int(x) for k in ("merged_from", "supersedes") for x in prov.get(k, [])]
