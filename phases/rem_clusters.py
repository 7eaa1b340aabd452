"""REM's consolidated summaries per cluster of related memories, and the run's digest.

Clusters. Two active memories of a workspace are *related* when their
cosine is >= `cluster_threshold` and they share at least
`cluster_min_shared_words` content words, at least `cluster_min_jaccard` of
their union (rem_rules.py's lexical features): the vector finds the neighbours,
the words confirm them. A cluster is a connected component of that
relation over the memories that survive this plan (a merged or superseded
source counts as its survivor). The candidates come from REM's own
neighbour search (rem_pairs.py, exact or HNSW): pairs with a changed
memory, then the pairs of each newly reached memory, until the component
is closed (an incremental run reaches the unchanged members of a cluster
that a new memory joined). Components larger than `cluster_max_size` are
left alone and counted in the notes: a chain that long is a theme, not a
topic, and a summary of it would say little.

Idempotence. Each cluster summary lists its members in provenance
(`memories`). A cluster whose members are all in one active REM summary
already is left alone, so a re-run over an unchanged store plans nothing,
and so does a cluster that only shrank (a member merged or forgotten: the
summary still reaches it). A cluster that gained a member gets a new
summary that supersedes every earlier summary sharing a member with it
(not edited in place: the old one stays reachable, and undo is exact).

Text. Deterministic by default (`summary_text`): a header with the count,
the time span and the words most members share, then one line per member
in time order, under `summary_budget_chars`. With `[dreams.rem.llm]`, a
non-dry run asks the model for the text instead (`refine`, outside any
transaction), within the run's call and token caps; any failure keeps the
deterministic text and says why in the run's notes. Dry runs never call
the model: they show the deterministic text and say the model would be
asked (a dry run is a preview, and must stay free and fast).

Digest. A non-dry run that applied anything ends with one `digest` memory
(ops_rem.WriteDigest), written from the ops the run recorded: counts and
ids of what was merged, superseded and summarised (`digest_text`).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from reverie.phases.cancel import NEVER, Cancel
from reverie.phases.llm import Budget as Budget
from reverie.phases.llm import ChatClient, LlmError
from reverie.phases.ops_rem import SummarizeCluster
from reverie.phases.settings import RemConfig
from reverie.store.embed_lexical import STOPWORDS, tokens
from reverie.store.redaction import redact

LINE_CHARS = 240
DIGEST_IDS = 40  # ids listed per kind of change in a digest (the rest counted)
SYSTEM_PROMPT = (
    "You consolidate an AI agent's related memories into one short summary. "
    "Keep every concrete fact: names, numbers, versions, paths, dates. "
    "Where memories disagree, say so. Invent nothing. "
    "Answer with the summary text only, in plain sentences, at most {chars} characters."
)


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    kind: str
    content: str
    observed_at: float


class UnionFind:
    """Union-find over ints (memory ids); a set's root is its smallest member.

    REM's merge and supersession groups (rem.py) and its clusters use it.
    """

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
        """The sets of two or more of `members`, each sorted, by smallest member."""
        out: dict[int, list[int]] = {}
        for m in sorted(members):
            out.setdefault(self.find(m), []).append(m)
        return [g for g in out.values() if len(g) > 1]


# Pairs (id, id) of related memories with a member among `ids` (survivor ids).
Expand = Callable[[list[int]], Iterable[tuple[int, int]]]


def components(
    edges: Iterable[tuple[int, int]], expanded: set[int] | None, expand: Expand, max_size: int
) -> tuple[list[list[int]], int]:
    """Closed components (sorted ids) of the related graph reached from `edges`.

    `expanded` are the ids whose pairs `edges` already hold (None: all of
    them, a full run); `expand(ids)` gives the pairs of others. Returns the
    components of 2 .. max_size members, and how many grew past max_size
    (those are not expanded further).
    """
    uf = UnionFind()
    nodes: set[int] = set()
    for a, b in edges:
        uf.union(a, b)
        nodes |= {a, b}
    done = set(nodes) if expanded is None else set(expanded)
    for _ in range(max_size):  # a path longer than max_size is a component too large
        sizes = Counter(uf.find(n) for n in nodes)
        todo = sorted(n for n in nodes - done if sizes[uf.find(n)] <= max_size)
        if not todo:
            break
        done |= set(todo)
        for a, b in expand(todo):
            uf.union(a, b)
            nodes |= {a, b}
    groups: dict[int, list[int]] = {}
    for n in sorted(nodes):
        groups.setdefault(uf.find(n), []).append(n)
    big = sum(1 for g in groups.values() if len(g) > max_size)
    return [g for g in groups.values() if len(g) <= max_size], big


def plan_summaries(
    workspace: str,
    comps: list[list[int]],
    members: dict[int, Member],
    existing: dict[int, frozenset[int]],
    cfg: RemConfig,
) -> list[SummarizeCluster]:
    """One op per component that is new or grew; `existing` are the workspace's
    active REM summaries (id -> member ids)."""
    by_member: dict[int, list[int]] = {}
    for sid, mids in existing.items():
        for m in mids:
            by_member.setdefault(m, []).append(sid)
    out: list[SummarizeCluster] = []
    for comp in comps:
        if len(comp) < cfg.cluster_min_size:
            continue
        olds = sorted({s for m in comp for s in by_member.get(m, ())})
        if any(set(comp) <= existing[s] for s in olds):
            continue  # summarized already (the cluster is the same, or shrank)
        mems = sorted((members[m] for m in comp), key=lambda m: (m.observed_at, m.id))
        out.append(
            SummarizeCluster(
                workspace=workspace,
                members=comp,
                content=summary_text(mems, cfg.summary_budget_chars),
                supersedes=olds,
                observed_at=mems[-1].observed_at,
                importance=cfg.summary_importance,
            )
        )
    return out


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def common_words(texts: list[str], n: int = 5) -> list[str]:
    """The content words most texts share (in at least two), most shared first."""
    seen: Counter[str] = Counter()
    for text in texts:
        seen.update({t for t in tokens(text) if t not in STOPWORDS and len(t) > 2})
    ranked = sorted((w for w, c in seen.items() if c >= 2), key=lambda w: (-seen[w], w))
    return ranked[:n]


def summary_text(mems: list[Member], budget: int) -> str:
    """The deterministic summary of a cluster (members in time order)."""
    # Rows stored before a pattern existed (or imported) may still hold a
    # secret: redact before cutting text into words and lines, which would
    # leave pieces that no longer look like one.
    contents = [redact(m.content) for m in mems]
    words = common_words(contents)
    head = f"Related memories ({len(mems)}, {_utc(mems[0].observed_at)} → "
    head += f"{_utc(mems[-1].observed_at)})"
    head += f" on: {', '.join(words)}." if words else "."
    lines = [head]
    used = len(head)
    for i, m in enumerate(mems):
        room = budget - used - 1
        rest = len(mems) - i
        if room < 40:
            lines[-1] += f" (+{rest} more)"
            break
        line = _clip(f"- [{m.kind}] {contents[i]}", min(LINE_CHARS, room))
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


# -- the LLM path ----------------------------------------------------------------


def refine(
    ops: list[Any],
    texts: dict[int, Member],
    cfg: RemConfig,
    client: ChatClient | None = None,
    *,
    cancel: Cancel = NEVER,
) -> tuple[list[Any], str]:
    """The ops with each cluster summary's text written by the model where it
    could be, and a note for the run (what was written, what fell back, why).

    `cancel` is checked before each call: a shutdown stops the step (with
    `Cancelled`) after the call in flight, which its timeout bounds."""
    llm = cfg.llm
    summaries = [op for op in ops if isinstance(op, SummarizeCluster)]
    if not llm.url or not summaries:
        return ops, ""
    client = client or ChatClient(llm)
    budget = Budget(calls=llm.max_calls, tokens=llm.max_tokens)
    system = SYSTEM_PROMPT.format(chars=cfg.summary_budget_chars)
    wrote = 0
    written: set[str] = set()
    failures: Counter[str] = Counter()
    out: list[Any] = []
    for op in ops:
        if not isinstance(op, SummarizeCluster):
            out.append(op)
            continue
        mems = sorted(
            (texts[m] for m in op.members if m in texts), key=lambda m: (m.observed_at, m.id)
        )
        user = "Memories, oldest first:\n" + "\n".join(
            f"- [{m.kind}, {_utc(m.observed_at)}] {_clip(redact(m.content), 2000)}" for m in mems
        )
        cancel.check()
        try:
            text = _clip_text(redact(client.complete(system, user, budget)), cfg)
        except LlmError as e:
            failures[str(e)] += 1
            out.append(op)
            continue
        if not text.strip() or text in written:
            # An identical text would be refused by the store (one active memory per text).
            failures["empty once redacted" if not text.strip() else "same text as another"] += 1
            out.append(op)
            continue
        written.add(text)
        wrote += 1
        out.append(msgspec.structs.replace(op, content=text, writer=f"llm:{llm.model}"))
    note = (
        f"LLM {llm.model} wrote {wrote} of {len(summaries)} cluster summaries "
        f"({budget.used_calls} calls, ~{budget.used_tokens} tokens)"
    )
    if failures:
        why = "; ".join(f"{r} (x{n})" if n > 1 else r for r, n in sorted(failures.items()))
        note += f"; {sum(failures.values())} fell back to the deterministic text: {why}"
    return out, note


def _clip_text(text: str, cfg: RemConfig) -> str:
    text = text.strip()
    if len(text) <= cfg.summary_budget_chars:
        return text
    return text[: cfg.summary_budget_chars - 1].rstrip() + "…"


def dry_run_note(ops: list[Any], cfg: RemConfig) -> str:
    """What a real run would ask the model (a dry run never calls it)."""
    n = sum(isinstance(op, SummarizeCluster) for op in ops)
    if not cfg.llm.url or not n:
        return ""
    return (
        f"LLM {cfg.llm.model} would write up to {min(n, cfg.llm.max_calls)} of {n} "
        "cluster summaries (a dry run shows the deterministic text)"
    )


# -- the digest ------------------------------------------------------------------


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:DIGEST_IDS])
    return shown + (f", +{len(items) - DIGEST_IDS} more" if len(items) > DIGEST_IDS else "")


def digest_text(
    run_id: int, done: list[tuple[str, dict[str, Any]]]
) -> tuple[str, dict[str, int], list[int]]:
    """The digest of a run's recorded ops: (text, counts, every memory id it names)."""
    merges: list[str] = []
    sups: list[str] = []
    sums: list[str] = []
    replaced: list[str] = []
    counts: Counter[str] = Counter()
    ids: set[int] = set()
    merged = superseded = summarised = 0
    for name, data in done:
        counts[name] += 1
        if name == "merge_duplicates":
            srcs = [int(s) for s in data["sources"]]
            merged += len(srcs)
            merges.append(f"#{data['survivor']} ← " + " ".join(f"#{s}" for s in srcs))
            ids |= {int(data["survivor"]), *srcs}
        elif name == "supersede":
            old = int(data["sources"][0])
            superseded += 1
            sups.append(f"#{old} → #{data['survivor']}")
            ids |= {old, int(data["survivor"])}
        elif name == "summarize_cluster":
            mids = [int(m) for m in data["members"]]
            summarised += len(mids)
            sums.append(f"#{data['created']} over " + " ".join(f"#{m}" for m in mids))
            replaced += [f"#{o} → #{data['created']}" for o in data.get("superseded", [])]
            ids |= {int(data["created"]), *mids, *(int(o) for o in data.get("superseded", []))}
    parts = [f"REM run {run_id}:"]
    if merges:
        parts.append(f"merged {merged} duplicates into {len(merges)} memories ({_listed(merges)}).")
    if sups:
        parts.append(f"superseded {superseded} outdated facts ({_listed(sups)}).")
    if sums:
        parts.append(
            f"wrote {len(sums)} cluster summaries over {summarised} memories ({_listed(sums)})."
        )
    if replaced:
        parts.append(f"replaced {len(replaced)} older summaries ({_listed(replaced)}).")
    return " ".join(parts), dict(sorted(counts.items())), sorted(ids)
