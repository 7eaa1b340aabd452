"""LoCoMo retrieval benchmark against the real daemon, over its socket.

Implements the protocol of shared/bench/locomo/README.md:

    python tests/bench/locomo.py --data ../shared/bench/locomo/locomo-dev.json --out run.jsonl \
        [--embedder NAME] [--mode hybrid|lexical|vector] [--dream] [--workers N]

For each conversation a fresh daemon (own data dir and socket, started with
tests/harness.py's Daemon) receives every turn, in session order, as one
memory: content `<speaker> said, "<text>"` (plus ` and shared <caption>`),
observed_at = the session's date, metadata {dia_id, session, speaker}, in the
workspace named after the conversation. Then every question's raw text is
searched (limit 50) and the ranked memories are written as one JSON line per
question. Finally score.py prints the default and the --paper-compat tables.

How a memory becomes dia_ids (the ids score.py compares with the evidence):
- the daemon deduplicates identical content within a workspace, so a turn
  whose text repeats an earlier turn's (e.g. two `Caroline said, "Thanks!"`)
  returns the earlier memory's id with created=false. The driver keeps, per
  memory id, every dia_id that was remembered into it, and reports such a
  memory as the list of all of them; the number of such turns is printed.
- a memory the driver did not create (one derived by consolidation) is
  reported as the dia_ids found in its provenance and metadata: any string of
  the form `D<session>:<turn>` anywhere in them (e.g. provenance
  {"dia_ids": [...]} or {"turns": [{"dia_id": ...}]}), plus, recursively, the
  dia_ids of memory ids listed under "parents", "memories", "memory_ids",
  "sources", "merged_from" or "supersedes" (ints, or objects with an "id"). A
  listed id the driver did not create is fetched (`get`) and resolved the
  same way, so a summary of merged memories reaches every turn behind it.
  This covers every memory the dream phases make: REM's merge survivor keeps
  {"merged_from": [...]} (the superseded sources are hidden from search) and
  a summary keeps {"memories": [...]}.
An item with one dia_id is written as a string, with several as a list.

--dream runs a full cycle over the daemon's RPC after a conversation is
ingested and before its questions: light-sleep, rem, deep-sleep (each a
`dreams_run`, not a dry run), then waits for the vector index to catch up.
It prints each run's counts and the search-visible memories (active, not
archived) before and after.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Daemon, wait_indexed
from reverie.rpc.client import Client
from reverie.rpc.proto_dreams import DreamsRun, DreamsRunResult
from reverie.rpc.protocol import Memory, Remember, Search

DATE_FORMAT = "%I:%M %p on %d %B, %Y"
TOP_K = 50
# Requests per pipelined batch. The daemon stops reading a connection once
# max_in_flight (64) requests are pending and the client only reads after
# sending a whole batch, so a batch must fit in the socket buffers: a few
# hundred small remember frames do.
INGEST_BATCH = 128
SEARCH_BATCH = 16
DREAM_PHASES = ("light-sleep", "rem", "deep-sleep")
_DIA_ID = re.compile(r"D\d+:\d+")
_PARENT_KEYS = ("parents", "memories", "memory_ids", "sources", "merged_from", "supersedes")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Turn:
    dia_id: str
    session: int
    speaker: str
    content: str
    observed_at: dt.datetime


@dataclass
class ConversationRun:
    sample_id: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    turns: int = 0
    deduplicated: int = 0
    ingest_s: float = 0.0
    search_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    active_before: int = 0  # --dream: search-visible memories before the cycle
    active_after: int = 0
    dream_s: float = 0.0
    dream_log: list[str] = field(default_factory=list)


# -- the data ------------------------------------------------------------------


def turn_content(turn: dict[str, Any]) -> str:
    text = f'{turn["speaker"]} said, "{turn["text"]}"'
    if caption := turn.get("blip_caption"):
        text += f" and shared {caption}"
    return text


def session_date(raw: str) -> dt.datetime:
    return dt.datetime.strptime(raw, DATE_FORMAT).replace(tzinfo=dt.UTC)


def turns(sample: dict[str, Any]) -> Iterator[Turn]:
    """Every turn of a conversation, in session order."""
    conv = sample["conversation"]
    numbers = sorted(int(m[1]) for k in conv if (m := re.fullmatch(r"session_(\d+)", k)))
    for n in numbers:
        date = session_date(conv[f"session_{n}_date_time"])
        for t in conv[f"session_{n}"]:
            yield Turn(t["dia_id"], n, t["speaker"], turn_content(t), date)


# -- memories to dia_ids ---------------------------------------------------------------


class Resolver:
    """Memory id -> the dia_ids it stands for; ids the driver did not create are
    fetched once (client.get) and resolved through their own provenance."""

    def __init__(self, client: Client, by_id: dict[int, list[str]]) -> None:
        self.client = client
        self.by_id = by_id  # what the driver remembered into each memory it created
        self.known: dict[int, list[str]] = {}  # fully resolved (provenance included)
        self._busy: set[int] = set()  # a provenance cycle resolves to nothing more

    def of_id(self, memory_id: int) -> list[str]:
        """A listed parent: its own turns plus, recursively, its provenance's."""
        if memory_id in self.known:
            return self.known[memory_id]
        if memory_id in self._busy:
            return []
        self._busy.add(memory_id)
        try:
            found = self.of_memory(self.client.get(memory_id))
        finally:
            self._busy.discard(memory_id)
        self.known[memory_id] = found
        return found

    def of_memory(self, memory: Memory) -> list[str]:
        """The dialog turns a memory stands for (see the module docstring)."""
        found = list(self.by_id.get(memory.id, []))
        self._walk(memory.provenance, found)
        self._walk(memory.metadata, found)
        return list(dict.fromkeys(found))

    def _walk(self, value: Any, out: list[str], key: str = "") -> None:
        if isinstance(value, str):
            if _DIA_ID.fullmatch(value):
                out.append(value)
        elif isinstance(value, int) and not isinstance(value, bool) and key in _PARENT_KEYS:
            out.extend(self.of_id(value))
        elif isinstance(value, dict):
            if key in _PARENT_KEYS and isinstance(value.get("id"), int):
                out.extend(self.of_id(value["id"]))
            for k, v in value.items():
                self._walk(v, out, k)
        elif isinstance(value, list):
            for v in value:
                self._walk(v, out, key)


def run_item(dia_ids: list[str]) -> str | list[str]:
    return dia_ids[0] if len(dia_ids) == 1 else dia_ids


# -- one conversation -------------------------------------------------------------------


def ingest(client: Client, sample: dict[str, Any], run: ConversationRun) -> dict[int, list[str]]:
    """Remember every turn (pipelined); return memory id -> the dia_ids it holds."""
    ws = sample["sample_id"]
    all_turns = list(turns(sample))
    by_id: dict[int, list[str]] = {}
    t0 = time.perf_counter()
    for i in range(0, len(all_turns), INGEST_BATCH):
        batch = all_turns[i : i + INGEST_BATCH]
        requests = [
            Remember(
                content=t.content,
                workspace=ws,
                observed_at=t.observed_at,
                metadata={"dia_id": t.dia_id, "session": t.session, "speaker": t.speaker},
            )
            for t in batch
        ]
        for t, res in zip(batch, client.call_many(requests), strict=True):
            by_id.setdefault(res.id, []).append(t.dia_id)
            run.deduplicated += not res.created
    run.ingest_s = time.perf_counter() - t0
    run.turns = len(all_turns)
    return by_id


def search_request(question: str, workspace: str, mode: str | None) -> Search:
    fields: dict[str, Any] = {"query": question, "workspace": workspace, "limit": TOP_K}
    if mode is not None:
        fields["mode"] = mode
    return Search(**fields)


def ask(
    client: Client,
    sample: dict[str, Any],
    resolve: Resolver,
    run: ConversationRun,
    mode: str | None,
) -> None:
    """Search every question; record ranked dia_ids and per-search latency.

    Searches go in small pipelined batches; a search's latency is measured as
    the batch's wall time divided by its size (what a client sees at that
    concurrency), and separately by one unpipelined pass over the first batch.
    """
    ws = sample["sample_id"]
    questions = [q["question"] for q in sample["qa"]]
    t0 = time.perf_counter()
    for q in questions[:SEARCH_BATCH]:
        s = time.perf_counter()
        client.call(search_request(q, ws, mode))
        run.latencies_ms.append(1000 * (time.perf_counter() - s))
    for i in range(0, len(questions), SEARCH_BATCH):
        batch = questions[i : i + SEARCH_BATCH]
        results = client.call_many([search_request(q, ws, mode) for q in batch])
        for j, res in enumerate(results):
            retrieved = [run_item(resolve.of_memory(h.memory)) for h in res.hits]
            run.lines.append({"sample_id": ws, "qa_index": i + j, "retrieved": retrieved})
    run.search_s = time.perf_counter() - t0


def searchable(client: Client) -> int:
    """Memories a search can return: active and not archived."""
    counts = client.status().memories
    return counts.get("active", 0) - counts.get("tier_archived", 0)


def dream_cycle(client: Client, run: ConversationRun, indexed: bool) -> None:
    """light-sleep, rem, deep-sleep over RPC, then let the vector index catch up."""
    run.active_before = searchable(client)
    for phase in DREAM_PHASES:
        res: DreamsRunResult = client.call(DreamsRun(phase=phase, dry_run=False))
        rep = res.report
        assert rep is not None, f"{phase}: no report"
        if rep.status != "completed":
            raise RuntimeError(f"{run.sample_id} {phase}: {rep.status} {rep.errors}")
        counts = {k: v for k, v in rep.counts.items() if v}
        run.dream_log.append(f"{phase} {rep.duration_ms} ms {counts}")
        run.dream_s += rep.duration_ms / 1000
    if indexed:
        wait_indexed(client, timeout=600)
    run.active_after = searchable(client)


def run_conversation(
    sample: dict[str, Any], config: str | None, mode: str | None, keep: Path | None, dream: bool
) -> ConversationRun:
    run = ConversationRun(sample["sample_id"])
    with tempfile.TemporaryDirectory(prefix="rv-locomo-", dir="/tmp") as tmp:
        root = keep / run.sample_id if keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        with Daemon(root, config=config, name="d") as daemon, daemon.client(timeout=120) as c:
            by_id = ingest(c, sample, run)
            indexed = c.status().index is not None
            if indexed and mode != "lexical":
                wait_indexed(c, timeout=600)  # search the whole vector index
            if dream:
                dream_cycle(c, run, indexed)
            ask(c, sample, Resolver(c, by_id), run, mode)
    return run


# -- the whole run -----------------------------------------------------------------------


def daemon_config(embedder: str | None, extra: Path | None) -> str | None:
    """The daemon's config: [embedder] name if given, plus an extra TOML file."""
    parts = [f'[embedder]\nname = "{embedder}"\n'] if embedder else []
    if extra is not None:
        parts.append(extra.read_text())
    return "\n".join(parts) or None


def check_mode_supported(mode: str | None) -> None:
    if mode is not None and "mode" not in Search.__struct_fields__:
        sys.exit(f"--mode {mode}: this reverie's search request has no `mode` field yet")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def report_timings(runs: list[ConversationRun], wall_s: float) -> None:
    n_turns = sum(r.turns for r in runs)
    n_q = sum(len(r.lines) for r in runs)
    ingest = sum(r.ingest_s for r in runs)
    search = sum(r.search_s for r in runs)
    lat = [x for r in runs for x in r.latencies_ms]
    dedup = sum(r.deduplicated for r in runs)
    print(f"conversations {len(runs)}, turns {n_turns}, questions {n_q}, wall {wall_s:.1f} s")
    print(
        f"ingest: {ingest:.2f} s summed over conversations, {n_turns / ingest:.0f} turns/s "
        f"(pipelined, batches of {INGEST_BATCH})"
    )
    print(
        f"deduplicated turns (same text as an earlier turn, reported as one memory with "
        f"several dia_ids): {dedup}"
    )
    print(
        f"search: {search:.2f} s summed, {n_q / search:.0f} searches/s pipelined "
        f"(batches of {SEARCH_BATCH}); one at a time: p50 {statistics.median(lat):.2f} ms, "
        f"p99 {percentile(lat, 99):.2f} ms over {len(lat)} searches"
    )
    if any(r.dream_log for r in runs):
        before = sum(r.active_before for r in runs)
        after = sum(r.active_after for r in runs)
        dream = sum(r.dream_s for r in runs)
        print(f"dream cycle ({', '.join(DREAM_PHASES)}): {dream:.2f} s summed")
        for r in runs:
            print(f"  {r.sample_id}: searchable {r.active_before} -> {r.active_after}")
            for line in r.dream_log:
                print(f"    {line}")
        print(f"searchable memories: {before} before the cycle, {after} after")


def score(score_py: Path, data: Path, out: Path) -> None:
    for extra, title in (
        ([], "default scoring (categories 1-4)"),
        (["--paper-compat"], "paper-compat (all categories)"),
    ):
        print(f"\n{title}:", flush=True)
        subprocess.run(
            [sys.executable, str(score_py), "--data", str(data), "--run", str(out), *extra],
            check=True,
        )


def default_score_py(data: Path) -> Path:
    beside = data.resolve().parent / "score.py"
    return beside if beside.exists() else REPO.parent / "shared/bench/locomo/score.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="locomo JSON (list of samples)")
    ap.add_argument("--out", type=Path, required=True, help="run file to write (JSON lines)")
    ap.add_argument("--embedder", help='written to the daemon config as [embedder] name = "..."')
    ap.add_argument(
        "--mode",
        choices=["hybrid", "lexical", "vector"],
        help="sent as the search request's mode (not sent when omitted)",
    )
    ap.add_argument("--dream", action="store_true", help="run a dream cycle before the questions")
    ap.add_argument("--workers", type=int, default=1, help="conversations run at once")
    ap.add_argument("--score", type=Path, help="score.py (default: beside --data)")
    ap.add_argument("--keep", type=Path, help="keep each daemon's data dir under this folder")
    ap.add_argument("--config", type=Path, help="extra daemon config (TOML), e.g. [search] tuning")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_mode_supported(args.mode)
    samples = json.loads(args.data.read_text())
    config = daemon_config(args.embedder, args.config)
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    t0 = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, args.workers)) as pool:
            runs = list(
                pool.map(
                    lambda s: run_conversation(s, config, args.mode, args.keep, args.dream),
                    samples,
                )
            )
    except (RuntimeError, TimeoutError) as e:  # the harness's "daemon did not start"
        sys.exit(f"locomo: {e}")
    wall = time.perf_counter() - t0
    with args.out.open("w") as f:
        for run in runs:
            for line in run.lines:
                f.write(json.dumps(line) + "\n")
    report_timings(runs, wall)
    score(args.score or default_score_py(args.data), args.data, args.out)


if __name__ == "__main__":
    main()
