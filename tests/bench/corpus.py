"""Deterministic synthetic agent memories, for benchmarks at 100k to 1M+ memories.

    python tests/bench/corpus.py --n 1000000 --seed 0 --out corpus.jsonl
    python tests/bench/corpus.py --n 100000 --queries 1000 --out queries.jsonl

`generate(n, seed)` yields dicts with the fields of a `Remember` request
(content, workspace, kind, tags, importance, observed_at, metadata): what a
coding agent's hooks and dream phases store. Memories come in sessions (a
burst of 3 to 40 in one workspace within an hour), sessions are spread over
about eight months, and workspaces differ in size (a few busy repositories,
a long tail of small ones). Texts are tool outputs, observations, facts,
preferences, decisions, procedures and session summaries, built from
templates over three vocabularies:

- English prose (function words included) whose word frequencies follow a
  Zipf law, so that some words occur in a large share of all memories,
  which is what makes full-text search slow;
- a coding vocabulary (test, build, config, ...), also Zipf-distributed;
- a long tail of invented identifiers (snake_case and CamelCase made of
  pseudo-words), paths, hosts, packages, numbers and error names, which
  is where the rare, discriminating query words come from.

`queries(n, seed, corpus_size=N)` builds a matching query set: questions
about rare identifiers, about common words only, naming a date, and
restricted to a workspace; each is made from a memory of the corpus, as a
user would ask about something that was stored, and names it as its
`source` (so a benchmark can tell whether a search found it). For a big
corpus already in a store, `query_sources` picks the memories and
`queries_for` writes the queries from them, read back from the store.

Same (n, seed), same output, on any machine: only `random.Random` (seeded
with strings, which does not depend on hash randomization) is used, and
every memory i is drawn from a generator seeded by (seed, its block).
Change VERSION with the output, so that stores built from it are rebuilt.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

VERSION = 1
START = dt.datetime(2024, 1, 8, 9, 0, tzinfo=dt.UTC)
SPAN_DAYS = 240
BLOCK = 4096  # memories drawn from one seeded generator (so item i can be regenerated)

# -- vocabularies ------------------------------------------------------------------------

# English words in rough frequency order: the Zipf head of every prose phrase.
PROSE = """
the of and to a in is it that for was on with as be this not are at by but from or have
an they which one you had we all there were can their been has more if will would when
so no what about up out them some then only into than its time also could other two like
now first do any my new these way may should after well just over most where because
did through very see still back make much before how even good work too many those used
need each same right while both down long off last take without under again since small
might few three why around place still found however another though against between
every part set during later next quite already point around whole enough rather since
user agent session change file fix run check note found looks seems want try keep start
update add remove move call pass fail return write read open close load save send get
use show look wait retry clean build install import export merge commit push pull reset
again today yesterday morning evening later soon before after usually often never always
probably maybe instead otherwise because although unless until while since whether
big small old new slow fast broken stable flaky green red simple hard easy clear wrong
""".split()

CODING = """
test tests build error config function module class method import package dependency
version release branch commit merge rebase review request issue bug fix patch feature
refactor cache index query schema migration table column database server client socket
request response timeout retry latency memory thread process queue worker job task
event handler callback hook plugin api endpoint route token auth session cookie header
log logger trace metric alert deploy pipeline ci docker image container volume network
port host proxy certificate key secret env variable flag option argument parameter
type interface struct field value default null string integer float list dict map set
array buffer stream file path directory folder lint format style typing annotation
exception traceback stack frame line column offset range slice loop iterator generator
async await future promise lock mutex semaphore channel signal timer clock date time
parser lexer token tree node graph edge vertex search sort filter order limit page
benchmark profile coverage fixture mock stub assertion snapshot golden regression
""".split()

VERBS = """
fix rename split inline remove cache retry validate parse log skip pin bump revert move
wrap guard batch stream index rewrite document test profile deprecate simplify extract
""".split()

STOPWORDS_IN_PROSE = frozenset(PROSE[:60])

_ONSETS = "b c d f g h j k l m n p r s t v w z br cr dr fl gr kl pl pr sk st tr".split()
_VOWELS = "a e i o u ai ea io ou".split()
_CODAS = ["", "", "n", "r", "s", "t", "l", "x", "m", "k"]

TOOLS = [
    "pytest",
    "ruff check",
    "mypy",
    "cargo test",
    "npm test",
    "go test ./...",
    "make",
    "git status",
    "git diff",
    "docker build .",
    "uv sync",
    "tox -e py311",
]
ERRORS = [
    "TypeError",
    "KeyError",
    "ValueError",
    "AttributeError",
    "ImportError",
    "TimeoutError",
    "ConnectionResetError",
    "AssertionError",
    "IndexError",
    "PermissionError",
    "FileNotFoundError",
    "RuntimeError",
    "UnicodeDecodeError",
    "OperationalError",
    "IntegrityError",
]
EXTENSIONS = ["py", "py", "py", "ts", "rs", "go", "toml", "yaml", "md", "sql", "json", "sh"]
TOP_DIRS = ["src", "tests", "lib", "app", "pkg", "cmd", "docs", "scripts", "internal", "web"]
ORGS = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"]
STATUS = ["200 OK", "201", "204", "400", "401", "403", "404", "409", "429", "500", "502", "503"]


def _pseudo_words(count: int, rng: random.Random) -> list[str]:
    """`count` distinct invented words (2-3 syllables), for identifiers and names."""
    out: dict[str, None] = {}
    while len(out) < count:
        syl = rng.choice((2, 2, 3))
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syl)
        )
        if word not in PROSE and word not in CODING:
            out[word] = None
    return list(out)


def _zipf_cum(count: int, s: float) -> list[float]:
    """Cumulative weights 1/rank^s, for random.choices."""
    return list(itertools.accumulate(1.0 / (r**s) for r in range(1, count + 1)))


class Vocabulary:
    """Every word list and distribution, built once from a fixed seed (not the corpus
    seed: two corpora of different seeds share a vocabulary, like two users' projects)."""

    def __init__(self, tail: int = 40_000) -> None:
        rng = random.Random(20240108)
        self.tail = _pseudo_words(tail, rng)
        self.tail_set = frozenset(self.tail)
        self.prose_cum = _zipf_cum(len(PROSE), 1.0)
        self.coding_cum = _zipf_cum(len(CODING), 0.9)
        # The tail is itself Zipf-like (s < 1: a long, fat tail): a few invented names
        # (main modules, the team's favourite helpers) recur, most are rare.
        self.tail_cum = _zipf_cum(len(self.tail), 0.8)
        self.projects = [f"{rng.choice(ORGS)}/{w}" for w in self.tail[:64]]
        self.hosts = [
            f"{w}.{rng.choice(['internal', 'svc', 'local', 'io'])}" for w in self.tail[64:96]
        ]
        self.people = [w.capitalize() for w in self.tail[96:128]]
        self.packages = self.tail[128:400]


_VOCAB: Vocabulary | None = None


def vocabulary() -> Vocabulary:
    global _VOCAB
    if _VOCAB is None:
        _VOCAB = Vocabulary()
    return _VOCAB


class _Draw:
    """Fast Zipf draws: random.choices fills a buffer of a few thousand words at a time."""

    def __init__(self, rng: random.Random, words: Sequence[str], cum: list[float]) -> None:
        self._rng, self._words, self._cum = rng, words, cum
        self._buf: list[str] = []

    def one(self) -> str:
        if not self._buf:
            self._buf = self._rng.choices(self._words, cum_weights=self._cum, k=4096)
        return self._buf.pop()

    def many(self, k: int) -> list[str]:
        if len(self._buf) < k:
            self._buf.extend(self._rng.choices(self._words, cum_weights=self._cum, k=4096 + k))
        out = self._buf[-k:]
        del self._buf[-k:]
        return out


class _Writer:
    """The text templates, over one generator's draws.

    `pick` and `below` stand in for rng.choice and rng.randint, which cost
    several times more (a million memories draw about twenty values each).
    """

    def __init__(self, rng: random.Random, vocab: Vocabulary) -> None:
        self.rng = rng
        self.u = rng.random
        self.v = vocab
        self.prose = _Draw(rng, PROSE, vocab.prose_cum)
        self.code = _Draw(rng, CODING, vocab.coding_cum)
        self.tail = _Draw(rng, vocab.tail, vocab.tail_cum)

    def pick(self, items: Sequence[str]) -> str:
        return items[int(self.u() * len(items))]

    def below(self, n: int) -> int:
        return int(self.u() * n)

    def phrase(self, lo: int = 5, hi: int = 14) -> str:
        words = self.prose.many(lo + self.below(hi - lo + 1))
        # Sprinkle coding words and the odd rare name into the prose.
        for i in range(0, len(words), 4):
            words[i] = self.code.one() if self.u() < 0.6 else self.tail.one()
        return " ".join(words)

    def ident(self) -> str:
        r = self.u()
        if r < 0.45:
            return f"{self.tail.one()}_{self.code.one()}"
        if r < 0.7:
            return f"{self.code.one()}_{self.tail.one()}_{self.code.one()}"
        return self.tail.one().capitalize() + self.code.one().capitalize()

    def path(self) -> str:
        top, mid = self.pick(TOP_DIRS), self.tail.one()
        sub = f"/{self.code.one()}" if self.u() < 0.5 else ""
        return f"{top}/{mid}{sub}/{self.tail.one()}_{self.code.one()}.{self.pick(EXTENSIONS)}"

    def number(self) -> int:
        # Pareto-distributed counts: mostly small, now and then large.
        return int(3.0 / (1.0 - self.u()) ** (1 / 1.2))

    # One method per kind of memory; each returns (kind, content, tags).

    def tool_output(self) -> tuple[str, str, list[str]]:
        r, tool = self.u(), self.pick(TOOLS)
        if r < 0.4:
            text = (
                f"Ran `{tool} {self.path()}`: {self.number()} passed, {self.number() % 7} failed "
                f"in {0.2 + 90 * self.u():.1f}s; {self.phrase(3, 8)}"
            )
        elif r < 0.7:
            text = (
                f"{self.pick(ERRORS)} in {self.path()}:{1 + self.below(2000)} "
                f"in {self.ident()}(): {self.phrase(4, 10)}"
            )
        else:
            text = (
                f"grep for {self.ident()} found {self.number()} matches in "
                f"{self.number()} files under {self.pick(TOP_DIRS)}/; {self.phrase(3, 9)}"
            )
        return "observation", text, ["tool", tool.split()[0]]

    def observation(self) -> tuple[str, str, list[str]]:
        if self.u() < 0.5:
            text = (
                f"Edited {self.path()} to {self.pick(VERBS)} {self.ident()} "
                f"({self.number()} lines changed). {self.phrase()}"
            )
        else:
            text = (
                f"The {self.code.one()} {self.ident()} returned {self.pick(STATUS)} after "
                f"{self.number() * 11} ms on {self.pick(self.v.hosts)}; {self.phrase(4, 10)}"
            )
        return "observation", text, []

    def fact(self) -> tuple[str, str, list[str]]:
        text = (
            f"{self.ident()} is defined in {self.path()} and uses {self.pick(self.v.packages)} "
            f"{self.below(10)}.{self.below(31)} for {self.code.one()}. {self.phrase()}"
        )
        return "fact", text, [self.code.one()]

    def preference(self) -> tuple[str, str, list[str]]:
        person = self.pick(self.v.people)
        text = (
            f"{person} prefers {self.code.one()} {self.tail.one()} over {self.tail.one()} "
            f"for {self.code.one()}: {self.phrase(4, 10)}"
        )
        return "preference", text, ["preference", person.lower()]

    def decision(self) -> tuple[str, str, list[str]]:
        text = (
            f"Decided to {self.pick(VERBS)} {self.ident()} in {self.path()} because "
            f"{self.phrase()}. {self.phrase(3, 8)}"
        )
        return "decision", text, ["decision"]

    def procedure(self) -> tuple[str, str, list[str]]:
        text = (
            f"To {self.pick(VERBS)} the {self.code.one()} {self.tail.one()}: run "
            f"`{self.pick(TOOLS)}`, then check {self.path()} and {self.phrase(3, 8)}"
        )
        return "procedure", text, ["howto"]

    def summary(self, when: dt.datetime) -> tuple[str, str, list[str]]:
        text = (
            f"Session of {when:%d %B %Y}: {self.phrase()}. {self.phrase()}. "
            f"Touched {self.path()} and {self.path()}; {self.ident()} still {self.pick(VERBS)}s."
        )
        return "summary", text, ["session"]

    def memory(self) -> tuple[str, str, list[str]]:
        r = self.u()
        if r < 0.30:
            return self.tool_output()
        if r < 0.60:
            return self.observation()
        if r < 0.75:
            return self.fact()
        if r < 0.80:
            return self.preference()
        if r < 0.90:
            return self.decision()
        return self.procedure()


def _sessions(
    seed: int, n: int, workspaces: Sequence[str]
) -> Iterator[tuple[str, dt.datetime, int]]:
    """(workspace, start, length) of consecutive sessions covering n memories."""
    rng = random.Random(f"sessions/{seed}")
    ws_cum = _zipf_cum(len(workspaces), 1.1)
    mean_len = 15
    # Spread sessions evenly over the span whatever n is (a bigger corpus is busier).
    step = dt.timedelta(days=SPAN_DAYS) * mean_len / max(n, 1)
    at, done = START, 0
    while done < n:
        length = min(n - done, rng.randint(3, 2 * mean_len - 3))
        ws = rng.choices(workspaces, cum_weights=ws_cum)[0]
        yield ws, at, length
        done += length
        at += step * rng.uniform(0.5, 1.5)


def workspace_names(count: int) -> list[str]:
    projects = vocabulary().projects
    return [f"github.com/{projects[i % len(projects)]}" for i in range(count)]


def generate(n: int, seed: int = 0, *, workspaces: int = 12) -> Iterator[dict[str, Any]]:
    """n memories, in observation order, as `Remember` fields (observed_at a datetime)."""
    vocab = vocabulary()
    names = workspace_names(workspaces)
    i = 0
    writer = _Writer(random.Random(f"{seed}/0"), vocab)
    for ws, start, length in _sessions(seed, n, names):
        when = start
        for j in range(length):
            if i % BLOCK == 0:
                writer = _Writer(random.Random(f"{seed}/{i // BLOCK}"), vocab)
            when += dt.timedelta(seconds=20 + 180 * writer.u())
            if j == length - 1 and length > 8:
                kind, content, tags = writer.summary(when)
            else:
                kind, content, tags = writer.memory()
            yield {
                "content": content,
                "workspace": ws,
                "kind": kind,
                "tags": tags,
                "importance": round(0.1 + 0.8 * writer.u(), 2),
                "observed_at": when,
                "metadata": {"synthetic": i},
            }
            i += 1


# -- queries -------------------------------------------------------------------------------

STYLES = ("rare", "common", "dated", "workspace")


def _content_words(text: str) -> list[str]:
    words = [w.strip("`:;,.()'\"") for w in text.replace("/", " ").replace("_", " ").split()]
    return [w.lower() for w in words if w.isalpha() and w.lower() not in STOPWORDS_IN_PROSE]


def query_sources(n: int, seed: int, corpus_size: int) -> list[int]:
    """Which memories (indices into `generate`'s output) the n queries are about."""
    rng = random.Random(f"queries/{seed}")
    return rng.sample(range(corpus_size), min(n, corpus_size))


def queries_for(items: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """One search request per memory: {query, workspace (or None), style, source}.

    Styles, in equal shares: `rare` (an invented word or identifier of the
    memory plus a word or two around it), `common` (3-6 frequent words only:
    the slow case for BM25), `dated` (a rare-style question that names the
    day the memory was observed), and `workspace` (a rare-style question
    restricted to the memory's workspace). `source` is the memory's
    metadata["synthetic"], its index in the corpus.
    """
    rng = random.Random(f"query-text/{seed}")
    invented = vocabulary().tail_set
    out: list[dict[str, Any]] = []
    for k, item in enumerate(items):
        style = STYLES[k % len(STYLES)]
        words = _content_words(item["content"]) or ["build"]
        common = [w for w in words if w not in invented] or words
        rare = [w for w in words if w in invented] or words
        if style == "common":
            chosen = rng.sample(common, min(len(common), rng.randint(3, 6)))
            text = rng.choice(_COMMON_FORMS).format(" ".join(chosen))
        else:
            chosen = [rng.choice(rare), *rng.sample(words, min(len(words), rng.randint(1, 3)))]
            text = rng.choice(_RARE_FORMS).format(" ".join(dict.fromkeys(chosen)))
            if style == "dated":
                text = f"{text.rstrip('?')} on {item['observed_at']:%d %B, %Y}?"
        ws = item["workspace"] if style == "workspace" else None
        out.append(
            {
                "query": text,
                "workspace": ws,
                "style": style,
                "source": item["metadata"]["synthetic"],
            }
        )
    return out


_COMMON_FORMS = ("how do we {}?", "{}", "what was the {} about", "why {}?")
_RARE_FORMS = (
    "what about {}?",
    "where is {}",
    "why did {} fail?",
    "{}",
    "what did we decide on {}?",
    "how does {} work",
)


def queries(
    n: int, seed: int = 0, *, corpus_size: int, workspaces: int = 12
) -> list[dict[str, Any]]:
    """n queries about memories of `generate(corpus_size, seed)` (regenerated up to the
    last one needed: for a big corpus, read the sources back from the store instead)."""
    sources = query_sources(n, seed, corpus_size)
    wanted = set(sources)
    found: dict[int, dict[str, Any]] = {}
    for i, item in enumerate(generate(max(sources) + 1, seed, workspaces=workspaces)):
        if i in wanted:
            found[i] = item
    return queries_for([found[i] for i in sources], seed)


# -- command line ----------------------------------------------------------------------------


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="memories to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspaces", type=int, default=12)
    ap.add_argument("--queries", type=int, help="write this many queries instead of memories")
    ap.add_argument("--out", type=Path, help="JSONL file (default: stdout)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.queries:
        items: Iterator[dict[str, Any]] = iter(
            queries(args.queries, args.seed, corpus_size=args.n, workspaces=args.workspaces)
        )
    else:
        items = generate(args.n, args.seed, workspaces=args.workspaces)
    out = args.out.open("w") if args.out else sys.stdout
    count = 0
    try:
        for item in items:
            out.write(json.dumps(item, default=_json_default) + "\n")
            count += 1
    finally:
        if args.out:
            out.close()
    print(f"{count} items in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
