"""REM's plan, apply and undo times on a synthetic store (not part of pytest).

    python3 tests/bench/bench_dream_rem.py [N ...]   (default: 10000)

Each store holds N facts in one workspace (the worst case: REM compares per
workspace) with lexical vectors stored as the daemon's indexer stores them:
sentences over 3375 words, 5% near-copies (casing, punctuation), 2% value
updates and 3% related facts (one word substituted: REM's cluster summaries).
Timed: the first, full plan (every memory against every other), apply,
undo, then an incremental plan after 1% new memories (the steady state),
exactly and through an HNSW index built here from the stored vectors (as
the daemon's indexer holds it), and a first plan forced through the index.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
from bench_dream_light import plan_apply_undo
from reverie.phases.rem import Rem, RemConfig
from reverie.phases.runner import apply_plan, transact_on
from reverie.store import schema, vectors
from reverie.store.connection import open_connection
from reverie.store.embed_lexical import LexicalEmbedder
from reverie.store.indexer import IndexView
from reverie.store.memories import content_hash
from reverie.store.vector_index import HnswParams, build_index

_json = msgspec.json.Encoder()
_SYLLABLES = "ka lo mi re tu sa ne po di fa gu be ro la vi".split()
# 3375 pseudo-words: sentences share some words, as real memories do, without
# every pair looking alike (a tiny vocabulary floods the candidate pairs).
WORDS = [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES]


def _text(rnd: random.Random, i: int) -> str:
    words = rnd.sample(WORDS, 5)
    return f"The {words[0]} {words[1]} of team{i % 997} uses {words[2]} {words[3]} {words[4]} {i}."


def build(path: Path, n: int, now: float) -> None:
    conn = open_connection(path, synchronous="OFF")
    schema.migrate(conn)
    rnd = random.Random(7)
    texts: list[str] = []
    for i in range(n):
        r = rnd.random()
        if texts and r < 0.05:
            texts.append(rnd.choice(texts).lower().rstrip(".") + "!")  # a near-copy
        elif texts and r < 0.07:
            base = rnd.choice(texts)
            texts.append(base.rsplit(" ", 1)[0] + f" {rnd.randrange(10**6)}.")  # an update
        elif texts and r < 0.10:  # a related fact: one word substituted (clusters)
            words = rnd.choice(texts).split(" ")
            words[rnd.choice((1, 2, 5, 6))] = rnd.choice(WORDS)
            texts.append(" ".join(words))
        else:
            texts.append(_text(rnd, i))
    rows = []
    for i, t in enumerate(texts):
        at = now - 2 * 86400 + i * 0.5
        rows.append((f"{i:032x}", "ws", "fact", t, at, at, at, content_hash(t), i + 1))
    with conn:
        conn.executemany(
            "INSERT OR IGNORE INTO memories (uid, workspace, kind, content, created_at, "
            "observed_at, updated_at, content_hash, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    emb = LexicalEmbedder()
    got = conn.execute("SELECT id, content, content_hash FROM memories").fetchall()
    for s in range(0, len(got), 4096):
        part = got[s : s + 4096]
        vecs = emb.embed([r[1] for r in part])
        with conn:
            vectors.save(
                conn, emb.model_id, [(r[0], r[2], v) for r, v in zip(part, vecs, strict=True)]
            )
    conn.close()


def main(sizes: list[int]) -> None:
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "bench.db"
            now = time.time()
            t = time.perf_counter()
            build(path, n, now)
            built = time.perf_counter() - t
            conn = open_connection(path)
            c = plan_apply_undo(Rem(), conn, now, clock=lambda now=now: now)
            print(
                f"rem n={n} (built in {built:.1f}s): full plan {c.plan_s:.2f}s "
                f"({len(c.plan.ops)} ops: {c.plan.counts()}), apply {c.apply_s:.2f}s, "
                f"undo {c.undo_s:.2f}s"
            )
            # Steady state: a run done, then 1% new memories; the plan compares those.
            apply_plan(Rem().plan(conn, now), transact=transact_on(conn), clock=lambda now=now: now)
            with conn:
                conn.execute("UPDATE memories SET updated_at = ? WHERE id % 100 = 0", (now + 7200,))
            t4 = time.perf_counter()
            inc = Rem().plan(conn, now + 7200)
            t5 = time.perf_counter()
            print(f"rem n={n}: incremental plan (1% changed) {t5 - t4:.2f}s; {inc.notes}")
            got = conn.execute("SELECT memory_id, vector FROM embeddings ORDER BY memory_id")
            rows = got.fetchall()
            t = time.perf_counter()
            index = build_index(
                [
                    (
                        np.array([r[0] for r in rows[s : s + 4096]]),
                        np.stack([np.frombuffer(r[1], "<f4") for r in rows[s : s + 4096]]),
                    )
                    for s in range(0, len(rows), 4096)
                ],
                dim=len(rows[0][1]) // 4,
                model_id="bench",
                total=len(rows),
                params=HnswParams(threads=2),
            )
            print(
                f"rem n={n}: HNSW index built in {time.perf_counter() - t:.1f}s (not timed below)"
            )
            seq = int(conn.execute("SELECT max(seq) FROM memories").fetchone()[0])
            view = lambda m, ws, seq=seq, index=index: IndexView(seq, index.query_many)  # noqa: E731
            for label, cfg in (
                ("default rule", RemConfig()),
                ("forced", RemConfig(index_min_cells=0)),
            ):
                t4 = time.perf_counter()
                inc2 = Rem(cfg, index=view).plan(conn, now + 7200)
                t5 = time.perf_counter()
                print(
                    f"rem n={n}: incremental plan with index ({label}) {t5 - t4:.2f}s; "
                    f"same ops as exact: {inc2.ops == inc.ops}; {inc2.notes}"
                )
            t4 = time.perf_counter()
            full = Rem(RemConfig(incremental=False, index_min_cells=0), index=view).plan(conn, now)
            t5 = time.perf_counter()
            print(f"rem n={n}: full plan through the index {t5 - t4:.2f}s; {full.notes}")
            conn.close()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000])
