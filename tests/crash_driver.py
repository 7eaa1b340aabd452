"""Crash-consistency loop: SIGKILL the real daemon mid-activity, restart, check.

Each iteration starts concurrent activity against one daemon, kills it with
SIGKILL at a moment drawn from a seeded RNG, and checks the data it left:

- writers `remember` unique texts; each acknowledged (id, text) is recorded;
- event posters send `post_events` batches of UserPromptSubmit events with
  unique idempotency keys (each makes an observation memory);
- a dreamer runs light-sleep, rem and deep-sleep in turn over RPC (the lock
  TTL is short, so a run killed with its lock held is taken over soon);
- the vector index saves every 0.25 s ([index] save_interval_s), and a poller
  counts the saves that committed during the window.

After the kill, with the daemon down, the database is opened read-only:
`PRAGMA integrity_check` is ok; every acknowledged memory is there with its
text; every acknowledged events batch is there whole and every batch that was
in flight is there whole or not at all; every stored event of ours has its
observation and every observation's source event exists; no memory is ours
but malformed. After the restart: this iteration's acknowledged memories are
served by `get`; the vector index catches up and holds exactly as many
vectors as SQLite has indexable memories, and a vector search for a sample of
them finds each one; a dream run succeeds once the dead daemon's lock has
expired, after which no ledger row is left 'running'. At the end the daemon
stops cleanly and the saved index's ids equal SQLite's indexable ids.

    python3 tests/crash_driver.py --iterations 50 [--seed N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import numpy as np
from harness import Daemon, wait_indexed
from reverie.errors import Conflict, ReverieError
from reverie.rpc.client import Client
from reverie.rpc.proto_dreams import DreamsRun, DreamsRunResult
from reverie.rpc.proto_events import Event, PostEvents, PostEventsResult

LOCK_TTL_S = 2.0
CONFIG = f"""
[index]
save_interval_s = 0.25
busy_file_save_s = 0  # the files at every save, under the writers too: kills land in them
delay_s = 0.05
max_lag_s = 0.5
# The vector lookups check reachability, not approximate recall: these texts are
# random bags of 100 words, whose vectors sit at cosine ~0.7 from one another with
# no cluster structure, the hardest case for HNSW. On a 127,558-vector store of
# this driver, no churn, no crash, searching every vector for itself (limit 10)
# missed 17 at ef=128, 1 at 256 and none at 512 (the default 128 sufficed up to
# ~300k; a 50-iteration run failed at 371k on such a miss).
ef = 512

[dreams]
preset = "off"
lock_ttl_s = {LOCK_TTL_S}
"""


def config(it: int) -> str:
    """Odd iterations plan dreams in the daemon's thread, even ones in the plan
    worker process: both kinds of run get killed, and the in-thread runs, which
    skip the worker's start (~0.5 s), complete within the short kill windows."""
    return CONFIG + f"plan_process = {'false' if it % 2 else 'true'}\n"


WRITERS = 4
POSTERS = 2
PHASES = ("light-sleep", "rem", "deep-sleep")
WORDS = [
    f"{a}{b}"
    for a in ("kal", "mor", "tev", "sun", "pir", "lox", "dra", "fen", "gul", "hos")
    for b in ("ap", "ek", "iv", "om", "ut", "yr", "an", "es", "ol", "ix")
]
WRITE_RE = re.compile(r"crash it\d+ w(\d+) #\d+ ")
AT_SAVE = 0.3  # share of iterations killed as an index save begins
AT_SAVE_WAIT_S = 8.0  # ...or after this long if no save came
SAMPLE = 20  # memories per iteration looked up by a vector search for their own text


class CrashCheckFailed(AssertionError):
    pass


@dataclass
class Batch:
    keys: list[str]
    acked: bool = False


@dataclass
class Ledger:
    """What the clients were told, across all iterations."""

    memories: dict[int, str] = field(default_factory=dict)  # acknowledged id -> text
    batches: list[Batch] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Totals:
    iterations: int = 0
    memories_checked: int = 0
    events_checked: int = 0
    batches_in_flight: int = 0
    batches_in_flight_stored: int = 0
    dream_runs_completed: int = 0
    killed_mid_dream: int = 0
    orphan_runs_closed: int = 0
    index_saves: int = 0
    torn_saves: int = 0  # kills that left a save's files behind, uncommitted
    vector_lookups: int = 0
    seconds: float = 0.0
    kill_after_s: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"iterations={self.iterations} acked_memories={self.memories_checked} "
            f"acked_events={self.events_checked} in_flight_batches={self.batches_in_flight} "
            f"(stored whole {self.batches_in_flight_stored}, absent "
            f"{self.batches_in_flight - self.batches_in_flight_stored}) "
            f"dream_runs={self.dream_runs_completed} killed_mid_dream={self.killed_mid_dream} "
            f"orphan_runs_closed={self.orphan_runs_closed} index_saves={self.index_saves} "
            f"torn_saves={self.torn_saves} "
            f"vector_lookups={self.vector_lookups} seconds={self.seconds:.1f}"
        )


def _text(rng: random.Random, tag: str) -> str:
    return f"crash {tag} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30)))


# -- the activity ----------------------------------------------------------------


def _writer(d: Daemon, it: int, n: int, seed: int, ledger: Ledger, stop: threading.Event) -> None:
    rng = random.Random(seed)
    try:
        with d.client(timeout=20) as c:
            i = 0
            while not stop.is_set():
                text = _text(rng, f"it{it} w{n} #{i}")
                r = c.remember(text, workspace=f"crash{n % 2}", tags=[f"w{n}"])
                with ledger.lock:  # recorded only once the daemon answered
                    ledger.memories[r.id] = text
                i += 1
    except ReverieError:
        pass  # killed under us: the write in flight is unacknowledged


def _poster(d: Daemon, it: int, n: int, seed: int, ledger: Ledger, stop: threading.Event) -> None:
    rng = random.Random(seed)
    try:
        with d.client(timeout=20) as c:
            b = 0
            while not stop.is_set():
                size = rng.randint(1, 25)
                keys = [f"it{it}-p{n}-b{b}-{j}" for j in range(size)]
                batch = Batch(keys)
                with ledger.lock:
                    ledger.batches.append(batch)  # in flight from here on
                events = [
                    Event(
                        key=k,
                        harness="claude-code",
                        type="UserPromptSubmit",
                        workspace=f"crash{n % 2}",
                        session_id=f"s{it}-{n}",
                        payload={"prompt": _text(rng, k)},
                    )
                    for k in keys
                ]
                res: PostEventsResult = c.call(PostEvents(events=events))
                if res.stored != size:
                    raise CrashCheckFailed(f"batch {keys[0]}: stored {res.stored} of {size}")
                batch.acked = True
                b += 1
    except ReverieError:
        pass


def _dreamer(d: Daemon, counter: list[int], stop: threading.Event) -> None:
    try:
        with d.client(timeout=60) as c:
            n = 0
            while not stop.is_set():
                try:
                    res: DreamsRunResult = c.call(DreamsRun(phase=PHASES[n % len(PHASES)]))
                except Conflict:
                    time.sleep(0.1)  # the killed daemon's lock until its TTL ends
                    continue
                if res.report is not None and res.report.status == "completed":
                    counter[0] += 1
                n += 1
    except ReverieError:
        pass


def _save_poller(header: Path, seen: set[float], stop: threading.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(FileNotFoundError):
            seen.add(header.stat().st_mtime)
        time.sleep(0.01)


# -- the checks ------------------------------------------------------------------


def _ro(db: Path) -> apsw.Connection:
    return apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)


def _fail(msg: str) -> CrashCheckFailed:
    return CrashCheckFailed(msg)


def check_offline(db: Path, ledger: Ledger, totals: Totals) -> int:
    """With the daemon killed: the file as the next start will find it.

    Returns how many dream runs were left 'running' (killed mid-run).
    """
    conn = _ro(db)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchall()
        if ok != [("ok",)]:
            raise _fail(f"integrity_check: {ok}")
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            raise _fail(f"foreign_key_check: {fk[:5]}")
        rows: dict[int, tuple[str, str, str]] = {
            int(r[0]): (str(r[1]), str(r[2]), str(r[3]))
            for r in conn.execute("SELECT id, content, workspace, tags FROM memories")
        }
        for mid, text in ledger.memories.items():
            if mid not in rows or rows[mid][0] != text:
                raise _fail(f"acknowledged memory {mid} lost or changed: {rows.get(mid)!r}")
        for mid, (content, workspace, tags) in rows.items():
            # Acknowledged or not, a row of ours is one whole request: its
            # workspace and tags are the ones sent with its text.
            if m := WRITE_RE.match(content):
                n = int(m.group(1))
                if workspace != f"crash{n % 2}" or json.loads(tags) != [f"w{n}"]:
                    raise _fail(f"memory {mid} is not whole: {workspace} {tags} {content[:40]}")
        events = {
            str(k): int(i)
            for k, i in conn.execute("SELECT idem_key, id FROM events WHERE idem_key LIKE 'it%'")
        }
        for batch in ledger.batches:
            present = sum(k in events for k in batch.keys)
            if batch.acked and present != len(batch.keys):
                raise _fail(f"acknowledged batch {batch.keys[0]}: {present}/{len(batch.keys)}")
            if present not in (0, len(batch.keys)):
                raise _fail(f"batch {batch.keys[0]} half-stored: {present}/{len(batch.keys)}")
        # Each event's observation is written in the same transaction.
        observed = {
            int(e)
            for (e,) in conn.execute(
                "SELECT j.value FROM memories m, json_each(m.provenance, '$.events') j "
                "WHERE m.kind = 'observation'"
            )
        }
        all_events = {int(i) for (i,) in conn.execute("SELECT id FROM events")}
        missing_obs = [k for k, i in events.items() if i not in observed]
        if missing_obs:
            raise _fail(f"events without their observation: {missing_obs[:5]}")
        dangling = observed - all_events
        if dangling:
            raise _fail(f"observations of events that do not exist: {sorted(dangling)[:5]}")
        running = int(conn.execute("SELECT count(*) FROM dream_runs WHERE status='running'").get)
        if running > 1:
            raise _fail(f"{running} dream runs left running: only one can run at a time")
    finally:
        conn.close()
    totals.memories_checked = len(ledger.memories)
    totals.events_checked = sum(len(b.keys) for b in ledger.batches if b.acked)
    return running


def _indexable(db: Path) -> set[int]:
    conn = _ro(db)
    try:
        return {
            int(i)
            for (i,) in conn.execute(
                "SELECT id FROM memories WHERE state = 'active' AND tier != 'archived'"
            )
        }
    finally:
        conn.close()


def _diagnose(c: Client, mid: int, text: str) -> str:
    """Why a vector lookup missed, for the next one to look into: transient (the
    same search finds it now), pushed out by neighbour context (its own vector
    rank is within 10), ranked below others by cosine (rank > 10), or not
    among the vector candidates at all (unreachable in the graph, or a stale
    vector)."""
    again = mid in [h.memory.id for h in c.search(text, mode="vector", limit=10).hits]
    wide = c.search(text, mode="vector", limit=200, explain=True).hits
    pos = next((i for i, h in enumerate(wide) if h.memory.id == mid), None)
    own = wide[pos].explain if pos is not None else None
    rank = own.vector_rank if own is not None else None
    if again:
        why = "transient: the same search found it when repeated"
    elif rank is None:
        why = "not among the vector candidates (unreachable, or a stale vector)"
    elif rank <= 10:
        why = "pushed out of the top 10 by neighbour context"
    else:
        why = "ranked below others by cosine"
    where = f"at position {pos + 1} of 200" if pos is not None else "not among 200"
    top = ", ".join(f"{h.memory.id}: {h.score} {h.explain}" for h in wide[:3])
    return f"{why}; {where}, its own {own}; index {c.status().index}; top 3: {top}"


def light_sleep_once_unlocked(c: Client, timeout: float) -> DreamsRunResult | None:
    """A light-sleep run once a dead daemon's lock has expired (None: not within timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            res: DreamsRunResult = c.call(DreamsRun(phase="light-sleep"))
            return res
        except Conflict:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


def check_online(
    d: Daemon, db: Path, fresh: dict[int, str], rng: random.Random, totals: Totals
) -> None:
    """After the restart, with nothing else running."""
    with d.client(timeout=60) as c:
        for mid, text in fresh.items():
            if c.get(mid).content != text:
                raise _fail(f"memory {mid}: served text differs")
        # Generous: 50 iterations grow the store to ~400k memories, where a
        # workspace index's build (before the catch-up resumes) outlasted 120 s.
        wait_indexed(c, timeout=600)
        ix = c.status().index
        want = _indexable(db)
        if ix is None or ix.vectors != len(want):
            raise _fail(f"index holds {ix and ix.vectors} vectors, SQLite {len(want)} indexable")
        live = sorted(m for m in fresh if m in want)
        for mid in rng.sample(live, min(SAMPLE, len(live))):
            hits = c.search(fresh[mid], mode="vector", limit=10).hits
            totals.vector_lookups += 1
            if mid not in [h.memory.id for h in hits]:
                raise _fail(
                    f"memory {mid} not found by a vector search for its own text "
                    f"({_diagnose(c, mid, fresh[mid])})"
                )
        # The dead daemon's lock expires after its TTL; then a run takes over.
        res = light_sleep_once_unlocked(c, LOCK_TTL_S + 30)
        if res is None:
            raise _fail("the killed daemon's dream lock was never taken over")
        if res.report is None or res.report.status != "completed":
            raise _fail(f"light-sleep after restart: {res.report}")
    conn = _ro(db)
    try:
        left = int(conn.execute("SELECT count(*) FROM dream_runs WHERE status='running'").get)
        held = conn.execute(
            "SELECT owner, expires_at FROM locks WHERE expires_at > ?", (time.time(),)
        ).fetchall()
    finally:
        conn.close()
    if left:
        raise _fail(f"{left} dream runs still 'running' after a run took the lock over")
    if held:
        raise _fail(f"the lock is still held after the run: {held}")


def check_saved_index(data_dir: Path) -> int:
    """After a clean stop: the saved index holds exactly SQLite's indexable ids as of
    the change sequence it was saved at (its header's `seq`).

    Writes just before the stop (the last light sleep's summaries, 20 ms before
    SIGTERM) may not be indexed yet: a start catches up from that seq, so they
    are not checked here, and no id of theirs may be missing for another reason.
    """
    header = json.loads((data_dir / "index" / "vectors.json").read_text())
    ids = np.fromfile(data_dir / "index" / header["ids"]["name"], dtype="<i8")
    conn = _ro(data_dir / "reverie.db")
    try:
        rows = conn.execute(
            "SELECT id, state = 'active' AND tier != 'archived', seq > ? FROM memories",
            (int(header["seq"]),),
        ).fetchall()
    finally:
        conn.close()
    want = {int(i) for i, live, newer in rows if live and not newer}
    gone = {int(i) for i, live, newer in rows if not live and not newer}
    newer = {int(i) for i, _, newer in rows if newer}
    got = {int(i) for i in ids}
    if not want <= got or got & gone or got - want - newer:
        raise _fail(
            f"saved index (seq {header['seq']}) differs from SQLite: "
            f"{len(got & gone)} forgotten or archived, {len(want - got)} missing, "
            f"{len(got - want - newer - gone)} unknown"
        )
    return len(got)


# -- the loop --------------------------------------------------------------------


def run(
    root: Path,
    iterations: int,
    seed: int,
    *,
    say: Callable[[str], None] = print,
) -> Totals:
    rng = random.Random(seed)
    say(f"crash loop: seed={seed} iterations={iterations} root={root}")
    started = time.monotonic()
    totals = Totals()
    ledger = Ledger()
    d = Daemon(root, config=config(0), name="crash")
    db = d.data_dir / "reverie.db"
    d.start()
    try:
        for it in range(iterations):
            stop = threading.Event()
            dream_count = [0]
            saves: set[float] = set()
            threads = [
                threading.Thread(target=_writer, args=(d, it, n, rng.getrandbits(32), ledger, stop))
                for n in range(WRITERS)
            ]
            threads += [
                threading.Thread(target=_poster, args=(d, it, n, rng.getrandbits(32), ledger, stop))
                for n in range(POSTERS)
            ]
            threads.append(threading.Thread(target=_dreamer, args=(d, dream_count, stop)))
            header = d.data_dir / "index" / "vectors.json"
            poller = threading.Thread(target=_save_poller, args=(header, saves, stop))
            initial = header.stat().st_mtime if header.exists() else 0.0
            # Mostly at a random moment mid-stream, sometimes right at the start,
            # and sometimes the moment an index save has begun writing files.
            draw = rng.random()
            at_save = draw < AT_SAVE
            after = rng.uniform(0.0, 0.3) if draw > 0.85 else rng.uniform(0.3, 2.5)
            before = len(ledger.memories)
            started_at = time.monotonic()
            for t in (*threads, poller):
                t.start()
            if at_save:
                _wait_for_save(d.data_dir / "index", AT_SAVE_WAIT_S)
                after = time.monotonic() - started_at
            else:
                time.sleep(after)
            d.kill()
            stop.set()
            for t in (*threads, poller):
                t.join(30)
            in_flight = [
                b for b in ledger.batches if not b.acked and b.keys[0].startswith(f"it{it}-")
            ]
            running = check_offline(db, ledger, totals)
            torn = _torn_saves(d.data_dir / "index")
            totals.torn_saves += torn
            stored_whole = _stored_batches(db, in_flight)
            totals.batches_in_flight += len(in_flight)
            totals.batches_in_flight_stored += stored_whole
            totals.killed_mid_dream += running
            totals.orphan_runs_closed += running
            totals.dream_runs_completed += dream_count[0]
            n_saves = len(saves - {initial})
            totals.index_saves += n_saves
            totals.kill_after_s.append(after)
            fresh = dict(list(ledger.memories.items())[before:])
            assert d.config_path is not None
            d.config_path.write_text(config(it + 1))  # the next iteration's
            d.start()
            check_online(d, db, fresh, rng, totals)
            totals.iterations += 1
            mine = [b for b in ledger.batches if b.acked and b.keys[0].startswith(f"it{it}-")]
            say(
                f"iteration {it}: killed after {after:.2f}s, +{len(fresh)} memories, "
                f"{sum(len(b.keys) for b in mine)} events acked, "
                f"{len(in_flight)} batch(es) in flight ({stored_whole} stored), "
                f"dream runs {dream_count[0]}, mid-dream {running}, "
                f"saves {n_saves}, torn save {torn}"
            )
        code = d.stop()
        if code != 0:
            raise _fail(f"the daemon exited with {code} at the final stop")
        n = check_saved_index(d.data_dir)
        say(f"saved index after the clean stop: {n} ids, equal to SQLite's at its seq")
    except BaseException:
        d.kill()
        say(f"daemon log tail:\n{d.log()[-4000:]}")
        raise
    totals.seconds = time.monotonic() - started
    say(f"crash loop passed: seed={seed} {totals.summary()}")
    return totals


def _wait_for_save(index_dir: Path, timeout: float) -> bool:
    """Until a save's first file appears (a temporary, or data the header does not name)."""
    old = set(index_dir.glob("vectors.*"))  # a torn save's leftovers are not new
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(index_dir.glob("vectors.*")) - old:
            return True  # kill now: the save is still writing, or just committed
        time.sleep(0.0005)
    return False


def _torn_saves(index_dir: Path) -> int:
    """1 if the kill interrupted an index save: files the committed header does not name."""
    try:
        header = json.loads((index_dir / "vectors.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return 0
    named = {header["data"]["name"], header["ids"]["name"], "vectors.json"}
    extra = [p for p in index_dir.glob("vectors.*") if p.name not in named]
    return 1 if extra else 0


def _stored_batches(db: Path, batches: list[Batch]) -> int:
    if not batches:
        return 0
    conn = _ro(db)
    try:
        n = 0
        for b in batches:
            if conn.execute("SELECT 1 FROM events WHERE idem_key = ?", (b.keys[0],)).fetchall():
                n += 1
        return n
    finally:
        conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", type=Path, default=None, help="run in this directory and keep it")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args.keep, args.iterations, seed)
    else:
        with tempfile.TemporaryDirectory(prefix="rv-crash-", dir="/tmp") as d:
            run(Path(d), args.iterations, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
