"""Embedder figures: single-query latency and bulk throughput, in process, one thread.

    python tests/bench/bench_embedders.py [--texts 20000] [--queries 2000] [--dim 384]
                                          [--data locomo.json] [--skip-minilm]

For ``lexical`` (and ``minilm`` when its extra is installed): query latency
p50/p99 with a cold and a warm token cache, the IDF-weighted query
(``embed_query``), and bulk throughput in batches of 256. Texts are synthetic
memories (Zipf-distributed vocabulary, 8-40 words), or LoCoMo turns with
``--data``. Embedders are called exactly as the daemon calls them, in process.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from reverie.store.embedding import Embedder, EmbedderConfig, make_embedder

BATCH = 256


def synthetic_texts(n: int, seed: int = 7) -> list[str]:
    """Memory-like sentences: a few frequent words, a long tail of rare ones."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ter", "van", "sol", "ri", "den", "po", "mar", "ux", "bel"]
    vocab = [
        "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(30_000)
    ]
    common = "the a to and of in is it that was for on with we i you".split()
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    out = []
    for _ in range(n):
        words = rng.choices(vocab, weights, k=rng.randint(8, 40))
        for _ in range(len(words) // 3):
            words.insert(rng.randrange(len(words)), rng.choice(common))
        out.append(" ".join(words).capitalize() + ".")
    return out


def locomo_texts(path: Path) -> tuple[list[str], list[str]]:
    turns, questions = [], []
    for sample in json.loads(path.read_text()):
        for key, session in sample["conversation"].items():
            if re.fullmatch(r"session_\d+", key):
                for t in session:
                    text = f'{t["speaker"]} said, "{t["text"]}"'
                    if t.get("blip_caption"):
                        text += f" and shared {t['blip_caption']}"
                    turns.append(text)
        questions += [q["question"] for q in sample["qa"]]
    return turns, questions


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {p50 * 1e6:8.0f} us   p99 {p99 * 1e6:8.0f} us"


def latency(fn: Callable[[str], object], queries: Sequence[str]) -> list[float]:
    out = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - t)
    return out


def throughput(e: Embedder, texts: Sequence[str]) -> float:
    t = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        e.embed(texts[i : i + BATCH])
    return len(texts) / (time.perf_counter() - t)


def bench(name: str, cfg: EmbedderConfig, texts: list[str], queries: list[str]) -> None:
    t = time.perf_counter()
    e = make_embedder(cfg)
    e.embed(["warm up"])  # minilm loads its model here
    print(f"{name}: model {e.model_id}, dim {e.dim}, ready in {time.perf_counter() - t:.2f} s")
    cold = latency(lambda q: e.embed([q]), queries)
    warm = latency(lambda q: e.embed([q]), queries)
    print(f"  query, cold cache     {percentiles(cold)}")
    print(f"  query, warm           {percentiles(warm)}")
    embed_query = getattr(e, "embed_query", None)
    if embed_query is not None:
        df = {term: 10 for q in queries for term in e.query_terms(q)}  # type: ignore[attr-defined]
        weighted = latency(lambda q: embed_query(q, df, 100_000), queries)
        print(f"  query, idf-weighted   {percentiles(weighted)}")
    print(f"  bulk, first pass      {throughput(e, texts):8.0f} texts/s (batches of {BATCH})")
    print(f"  bulk, second pass     {throughput(e, texts):8.0f} texts/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=2_000)
    ap.add_argument("--dim", type=int, default=384, help="lexical dimension")
    ap.add_argument("--data", type=Path, help="LoCoMo JSON: embed its turns and questions")
    ap.add_argument("--skip-minilm", action="store_true")
    a = ap.parse_args()
    if a.data:
        texts, queries = locomo_texts(a.data)
        texts, queries = texts[: a.texts], queries[: a.queries]
    else:
        texts = synthetic_texts(a.texts)
        queries = [" ".join(t.split()[:8]) + "?" for t in synthetic_texts(a.queries, seed=8)]
    print(f"python {platform.python_version()}, {platform.machine()}, one thread")
    print(f"{len(texts)} texts (mean {statistics.mean(map(len, texts)):.0f} chars), ", end="")
    print(f"{len(queries)} queries")
    bench("lexical", EmbedderConfig(name="lexical", dim=a.dim), texts, queries)
    if a.skip_minilm:
        return
    try:
        cfg = EmbedderConfig(name="minilm", threads=1, batch_size=64)
        make_embedder(cfg)
    except Exception as e:
        print(f"minilm: skipped ({e})")
        return
    # The model is ~1000x slower: a tenth of the texts gives stable figures.
    bench("minilm", cfg, texts[: max(len(texts) // 10, BATCH)], queries[:500])


if __name__ == "__main__":
    main()
