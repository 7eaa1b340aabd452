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

The plan is a pure function of the database, `now` and the config (with
the index, of its neighbours too: HNSW recall is near 1, not exactly 1).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apsw
import msgspec
import numpy as np
import numpy.typing as npt
from reverie.phases.ops import Op
from reverie.phases.ops_rem import MergeDuplicates, Supersede
from reverie.phases.rem_pairs import candidate_pairs
from reverie.phases.runner import Plan
from reverie.store.embed_lexical import IRREGULAR, STOPWORDS, LexicalEmbedder, porter_stem, tokens
from reverie.store.embedding import embedder_for_model
from reverie.store.indexer import IndexView

Floats = npt.NDArray[np.float32]
# (model, workspace) -> the daemon's index for it, or None (not ready, other model).
ViewSource = Callable[[str, str], IndexView | None]


class RemConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """REM's tunables; the defaults were measured on tests/test_dream_rem.py's planted store."""

    # Cosine for a duplicate candidate. Lexical-embedder vectors of a text and
    # its copy with a case/punctuation edit or one added word score >= 0.9;
    # the lexical check, not the cosine, is what tells facts apart.
    duplicate_threshold: float = 0.9
    # Cosine for a supersession candidate: a changed value removes that value's
    # word feature (numbers carry no character n-grams), so such pairs sit lower.
    supersede_threshold: float = 0.7
    added_fraction: float = 0.25  # added words a duplicate may have, of the union
    min_subject_words: int = 2  # content words a supersession's subject needs
    exclude_kinds: list[str] = msgspec.field(default_factory=list)
    # Hook observations (metadata.session_id) are raw session records that light
    # sleep distils per session: merging them across sessions would break that.
    skip_session_observations: bool = True
    incremental: bool = True  # compare only memories changed since the last REM run
    rescan_margin_s: float = 3600.0  # plan-to-ledger gap and clock skew, re-covered
    # Similarity cells per block (64 MB of float32): at 100k, 160-row blocks run
    # OpenBLAS at ~200 GFLOP/s on 2 cores against ~170 for 80 rows, ~110 for 40.
    block_cells: int = 16_000_000
    max_pairs: int = 200_000  # candidate pairs per run (the rest waits for the next run)
    max_ops: int = 5_000  # ops per run: bounds a run's undo and the writer's work
    # With the daemon's index: neighbours asked per changed memory (grown 4x
    # while the k-th is still above the thresholds), and the exact cells a
    # changed memory's row must cost before a query is cheaper (one query at
    # ef=128, ~0.4 ms on 2 threads, costs as much as ~90k cells at ~4.4 ns).
    index_k: int = 16
    index_min_cells: int = 90_000


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


class Rem:
    name = "rem"

    def __init__(self, cfg: RemConfig | None = None, *, index: ViewSource | None = None) -> None:
        self.cfg = cfg or RemConfig()
        self.index = index  # the daemon's HNSW index; None: exact comparison only

    def plan(self, conn: apsw.Connection, now: float) -> Plan:
        cfg = self.cfg
        model = _model(conn)
        embedder = embedder_for_model(model) if model else LexicalEmbedder()
        model = model or (embedder.model_id if embedder else None)
        since = _since(conn, cfg)
        kinds = ",".join("?" * len(cfg.exclude_kinds))
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT m.id, m.workspace, m.kind, m.content, m.observed_at, m.recall_count, "
            "json_extract(m.metadata, '$.pinned'), m.updated_at, m.seq, "
            "CASE WHEN e.content_hash = m.content_hash THEN e.vector END "
            "FROM memories m LEFT JOIN embeddings e ON e.memory_id = m.id AND e.model = ? "
            "WHERE m.state = 'active' AND m.tier != 'archived' "
            f"AND m.kind NOT IN ({kinds}) AND NOT (? AND m.kind = 'observation' "
            "AND json_extract(m.metadata, '$.session_id') IS NOT NULL) "
            "ORDER BY m.workspace, m.id",
            (model, *cfg.exclude_kinds, cfg.skip_session_observations),
        ).fetchall()
        by_ws: dict[str, list[tuple[_Mem, bytes | None]]] = {}
        for mid, ws, kind, content, observed, rcount, pinned, updated, seq, blob in rows:
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
            by_ws.setdefault(str(ws), []).append((mem, blob))
        mems: dict[int, _Mem] = {}
        pairs: list[tuple[int, int, float]] = []
        skipped = via_index = 0
        for ws, items in by_ws.items():
            if not any(m.dirty for m, _ in items):
                continue
            missing = [i for i, (_, b) in enumerate(items) if b is None]
            if missing and embedder is None:
                items = [it for it in items if it[1] is not None]
                skipped += len(missing)
            if len(items) < 2:
                continue
            vecs = _vectors(items, embedder)
            ws_mems = [m for m, _ in items]
            mems.update((m.id, m) for m in ws_mems)
            view = self.index(model, ws) if self.index is not None and model else None
            found, used = _pairs(ws_mems, vecs, cfg, cfg.max_pairs - len(pairs), view)
            pairs += found
            via_index += used
            if len(pairs) >= cfg.max_pairs:
                break
        ops, dups, sups = self._ops(mems, pairs)
        notes = (
            f"compared {sum(m.dirty for m in mems.values())} changed of {len(rows)} active "
            f"memories ({model}); {len(pairs)} candidate pairs; "
            f"merged {dups} duplicates, superseded {sups} outdated facts"
        )
        if via_index:
            notes += f"; {via_index} workspaces through the vector index"
        if skipped:
            notes += f"; {skipped} memories without a {model} vector skipped"
        return Plan(phase=self.name, ops=ops, items=len(rows), notes=notes)

    def _ops(
        self, mems: dict[int, _Mem], pairs: list[tuple[int, int, float]]
    ) -> tuple[list[Op], int, int]:
        cfg = self.cfg
        dup = _Find()
        dup_members: set[int] = set()
        sup_edges: list[tuple[int, int, Features, Features]] = []
        cosine: dict[tuple[int, int], float] = {}
        for a, b, cos in pairs:
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


def _vectors(items: list[tuple[_Mem, bytes | None]], embedder: Any) -> Floats:
    missing = [i for i, (_, b) in enumerate(items) if b is None]
    fresh = embedder.embed([items[i][0].content for i in missing]) if missing else None
    dim = fresh.shape[1] if fresh is not None else len(items[0][1] or b"") // 4
    out = np.empty((len(items), dim), dtype=np.float32)
    for i, (_, blob) in enumerate(items):
        if blob is not None:
            out[i] = np.frombuffer(blob, dtype="<f4")
    if fresh is not None:
        out[missing] = fresh
    return out


def _pairs(
    mems: list[_Mem], vecs: Floats, cfg: RemConfig, budget: int, view: IndexView | None
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
        np.array([m.dirty for m in mems], dtype=bool),
        min(cfg.duplicate_threshold, cfg.supersede_threshold),
        block_cells=cfg.block_cells,
        index_k=cfg.index_k,
        index_min_cells=cfg.index_min_cells,
        view=view,
    )
    return [(mems[a].id, mems[b].id, cos) for a, b, cos in found[:budget]], used


def provenance_sources(conn: apsw.Connection, memory_id: int) -> list[int]:
    """The memories a survivor absorbed (merged_from and supersedes), for reachability."""
    prov = json.loads(
        str(conn.execute("SELECT provenance FROM memories WHERE id = ?", (memory_id,)).get)
    )
    return [int(x) for k in ("merged_from", "supersedes") for x in prov.get(k, [])]
