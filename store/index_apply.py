"""Bringing memories' changes into a vector index generation (the indexer's step).

Blocking: the indexer runs it in a worker thread, for a catch-up batch or a
rebuild's. `embed(embedder, texts)` makes the missing vectors (the embed
worker process or in place: store/indexer.py decides) and `pace(seconds)` is
called after each step (store/index_pacing.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import apsw
import numpy as np
from reverie.store import vectors
from reverie.store.embedding import Embedder, Vectors
from reverie.store.index_generation import Generation
from reverie.store.index_pacing import PACED_ADD
from reverie.store.vectors import Change

EMBED_CHUNK = 64  # texts embedded between GIL hand-overs


def apply_changes(
    conn: apsw.Connection,
    gen: Generation,
    changes: list[Change],
    *,
    embed: Callable[[Embedder, list[str]], Vectors],
    pace: Callable[[float], None],
) -> None:
    """Bring these memories' vectors into `gen`: embed what is missing, add the
    active ones (skipping unchanged vectors), remove the rest, update the
    workspace indexes."""
    active = [c for c in changes if c.active]
    model = gen.embedder.model_id
    have = vectors.stored(conn, model, active)
    # A change of metadata only (light sleep's set_meta gives 100k memories a
    # new seq each) leaves the index as it is: drop memories indexed in the
    # same workspace whose stored vector is the one the index holds (checked
    # under the index's shared lock, so searches go on). Passed to add they
    # were compared under the exclusive lock, and again by every workspace
    # index: 0.1-0.2 ms each, with searches waiting.
    same = [c for c in active if c.id in have and gen.members.workspace_of(c.id) == c.workspace]
    if same:
        held = gen.index.holds([c.id for c in same], np.stack([have[c.id] for c in same]))
        skip = {c.id for c, h in zip(same, held.tolist(), strict=True) if h}
        active = [c for c in active if c.id not in skip]
    missing = [c for c in active if c.id not in have]
    for start in range(0, len(missing), EMBED_CHUNK):
        began = time.thread_time()
        chunk = missing[start : start + EMBED_CHUNK]
        fresh = embed(gen.embedder, [c.content for c in chunk])
        for i, c in enumerate(chunk):
            have[c.id] = fresh[i]
            gen.unsaved[c.id] = (c.content_hash, fresh[i])
        pace(time.thread_time() - began)  # (gives the GIL back in any case)
    added: list[tuple[int, str, Vectors]] = []
    moved: list[tuple[int, str]] = []  # (id, the workspace it leaves)
    if active:
        ids = np.array([c.id for c in active], dtype=np.int64)
        rows = np.stack([have[c.id] for c in active])
        for start in range(0, len(ids), PACED_ADD):
            began = time.thread_time()
            gen.index.add(ids[start : start + PACED_ADD], rows[start : start + PACED_ADD])
            pace(time.thread_time() - began)
        for c in active:
            old = gen.members.workspace_of(c.id)
            if old is not None and old != c.workspace:
                moved.append((c.id, old))
            gen.members.set(c.id, c.workspace)
            added.append((c.id, c.workspace, have[c.id]))
    gone = [c.id for c in changes if not c.active]
    if gone:
        gen.index.remove(np.array(gone, dtype=np.int64))
        for mid in gone:
            old = gen.members.workspace_of(mid)
            if old is not None:
                moved.append((mid, old))
            gen.members.set(mid, None)
    # The workspace indexes: removals first (cheap), then the adds in the same
    # steps as the global index's (each add holds that index's lock).
    if moved:
        gen.scoped.apply([], moved)
    for start in range(0, len(added), PACED_ADD):
        began = time.thread_time()
        gen.scoped.apply(added[start : start + PACED_ADD], [])
        pace(time.thread_time() - began)
    gen.dirty = True
