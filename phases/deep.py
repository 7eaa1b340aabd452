"""Deep sleep: promote what earned it, archive what went stale, then maintain the store.

Deep sleep runs rarely (weekly in the `core` preset) and is the phase that
changes what retrieval sees, so its rules are stricter than light sleep's
marks and every tier move is an undoable `SetTier` op:

* Promote. A short-term memory moves to `long` when its value score (the
  light-sleep formula, recomputed now: a mark may be days old) and its
  recall count and distinct queries all reach the thresholds. Defaults are
  openclaw's `deep` preset gates (score 0.8, 3 recalls, 3 distinct
  queries), stricter than light sleep's promote mark (0.75 / 3 / 2).

* Archive. A memory moves to `archived` (kept, hidden from search by
  default) when either
    - light sleep marked it an archive candidate and it has not been seen or
      recalled for `archive_grace_days` (a recall after the mark resets the
      age, so a memory that became useful again is kept), or
    - its score is below `archive_max_score` and it is older than
      `archive_min_age_days`, whatever the marks say.
  "Seen" and "older" count from max(created_at, last_recalled_at) (light
  sleep's `stale_days`), never from observed_at: an imported history of old
  events has just entered the store and is not stale until it has gone
  unrecalled there for the grace period.
  Never a protected kind (light sleep's `protected_kinds`: decision,
  preference, procedure) and never a pinned memory (`metadata.pinned`).

* Version snapshots. `reverie update` overwrites a memory in place after
  copying the old row to `memory_versions` (store/versions.py). Deep sleep
  keeps, per memory, the newest `versions_keep` snapshots (default 10) and
  prunes an older one only once it was replaced more than
  `versions_retention_days` ago (default 30): a burst of edits never loses
  last week's text the same night. Each memory's pruned snapshots are one
  undoable `PruneVersions` op; its `dream_ops.data` holds the deleted rows,
  so `dreams undo` re-inserts them (the text leaves the store for good when
  that ledger row does, or when the memory is purged).

* Maintenance, after the ops, recorded in the run's notes and NOT undoable
  (it changes no memory a reader can see, except the purge):
    - purge: forgotten tombstones older than `purge_forgotten_after_days`
      (by `metadata.forgotten.at`) lose their text and their version
      snapshots, exactly as `forget --purge` does. Undo cannot bring erased text back, and keeping
      the text in `dream_ops` to make it undoable would mean it was never
      purged, so the purge is outside the plan's ops: documented retention,
      then gone. `0` turns it off. A dry run reports how many would go.
    - `INSERT INTO memories_fts(memories_fts) VALUES('optimize')` merges the
      FTS segments that `automerge = 8` leaves behind; `PRAGMA optimize`
      refreshes the planner's statistics; both through the writer.
    - a WAL checkpoint(TRUNCATE), which SQLite refuses inside a transaction,
      so the caller passes a `checkpoint` callable (the daemon opens a short
      write connection of its own for it).
  The HNSW index is compacted by its owner, the vector indexer: after a
  completed run the daemon asks it (`Indexer.compact`), and it rebuilds the
  graph from the stored vectors when a quarter or more of its slots hold
  deleted memories, serving the old one meanwhile (logged as
  `index_compaction`; `status` shows the graph's `slots`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import apsw
from reverie.errors import LockLost
from reverie.phases.cancel import NEVER, Cancel
from reverie.phases.light import ACTIVE_ROWS, DAY, SCORE_KEY, LightConfig, score, stale_days
from reverie.phases.ops import Op, SetTier, Tier
from reverie.phases.runner import Check, Plan, Transact
from reverie.phases.settings import DeepConfig as DeepConfig  # on the CLI's import path
from reverie.store import memories, versions

Checkpoint = Callable[[], tuple[int, int, int]]  # PRAGMA wal_checkpoint's (busy, log, done)


_PURGEABLE = (
    "FROM memories WHERE state = 'forgotten' AND content != '' "
    "AND coalesce(json_extract(metadata, '$.forgotten.at'), updated_at) < ?"
)


class DeepSleep:
    name = "deep-sleep"

    def __init__(self, cfg: DeepConfig | None = None, light: LightConfig | None = None) -> None:
        self.cfg = cfg or DeepConfig()
        self.light = light or LightConfig()  # the score formula and the protected kinds

    def _verdict(self, now: float, tier: Tier, row: tuple[Any, ...], meta: dict[str, Any]) -> Tier:
        cfg = self.cfg
        kind, _imp, _observed, _recalled, rcount, dq = row[:6]
        s = score(self.light, now, row)
        if (
            tier == "short"
            and s >= cfg.promote_min_score
            and rcount >= cfg.promote_min_recalls
            and dq >= cfg.promote_min_queries
        ):
            return "long"
        if tier == "archived" or meta.get("pinned") or kind in self.light.protected_kinds:
            return tier
        age_days = stale_days(now, row)
        mark = meta.get(SCORE_KEY)
        marked = isinstance(mark, dict) and mark.get("candidate") == "archive"
        if marked and age_days >= cfg.archive_grace_days:
            return "archived"
        if s < cfg.archive_max_score and age_days >= cfg.archive_min_age_days:
            return "archived"
        return tier

    def purge_cutoff(self, now: float) -> float | None:
        days = self.cfg.purge_forgotten_after_days
        return now - days * DAY if days > 0 else None

    def plan(self, conn: apsw.Connection, now: float, cancel: Cancel = NEVER) -> Plan:
        ops: list[Op] = []
        items = 0
        for mid, tier, meta_text, *row in conn.execute(ACTIVE_ROWS):
            items += 1
            cancel.every(items)
            meta = json.loads(meta_text) if "pinned" in meta_text or SCORE_KEY in meta_text else {}
            to = self._verdict(now, cast(Tier, tier), tuple(row), meta)
            if to != tier:
                ops.append(SetTier(memory_id=mid, from_tier=tier, to_tier=to))
        promote = sum(1 for op in ops if isinstance(op, SetTier) and op.to_tier == "long")
        moves = len(ops)
        cancel.check()
        prune = versions.prunable(
            conn, now, keep=self.cfg.versions_keep, retention_days=self.cfg.versions_retention_days
        )
        ops += prune
        snapshots, versioned = versions.totals(conn)
        pruned = sum(len(op.versions) for op in prune)
        cancel.check()
        cutoff = self.purge_cutoff(now)
        purgeable = (
            int(conn.execute(f"SELECT count(*) {_PURGEABLE}", (cutoff,)).get)
            if cutoff is not None
            else 0
        )
        cfg = self.cfg
        notes = (
            f"examined {items} active memories: {promote} to promote, "
            f"{moves - promote} to archive; {snapshots} version snapshots of {versioned} "
            f"memories: prune {pruned} of {len(prune)} memories"
        )
        notes += (
            f" (beyond the newest {cfg.versions_keep}, replaced over "
            f"{cfg.versions_retention_days:g} days ago)"
        )
        notes += (
            f"; after the ops: purge {purgeable} forgotten tombstones older than "
            f"{cfg.purge_forgotten_after_days:g} days (not undoable)"
        )
        if self.cfg.maintenance:
            notes += ", FTS optimize, PRAGMA optimize, WAL checkpoint"
        return Plan(phase=self.name, ops=ops, items=items, notes=notes)

    def maintenance(
        self, now: float, checkpoint: Checkpoint | None = None
    ) -> Callable[[Transact, Check], str]:
        """The step `apply_plan` runs after the ops (`after=`): returns a note for the run."""

        def run(transact: Transact, check: Check) -> str:
            notes: list[str] = []
            cutoff = self.purge_cutoff(now)
            if cutoff is not None:

                def purge(conn: apsw.Connection) -> int:
                    n = int(conn.execute(f"SELECT count(*) {_PURGEABLE}", (cutoff,)).get)
                    if n:
                        # Like `forget --purge`: the tombstone row stays (provenance
                        # and imports still see it), its text, tags and snapshots go.
                        versions.delete_for(conn, f"SELECT id {_PURGEABLE}", (cutoff,))
                        conn.execute(
                            "UPDATE memories SET content = '', tags = '[]', updated_at = ?, "
                            f"seq = ? WHERE id IN (SELECT id {_PURGEABLE})",
                            (now, memories.next_seq(conn), cutoff),
                        )
                    if not check(conn):
                        raise LockLost("deep-sleep: lost the phase lock before the purge")
                    return n

                notes.append(f"purged {transact(purge)} forgotten tombstones")
            if self.cfg.maintenance:

                def optimize(conn: apsw.Connection) -> None:
                    # Seconds at 100k: not started once the run is stopping.
                    if not check(conn):
                        raise LockLost("deep-sleep: lost the phase lock before the optimize")
                    conn.execute("INSERT INTO memories_fts(memories_fts) VALUES('optimize')")
                    conn.execute("PRAGMA optimize")

                transact(optimize)
                notes.append("FTS and PRAGMA optimize done")
                if checkpoint is not None:
                    # TRUNCATE reports 0/0 pages once it has emptied the WAL.
                    busy, _log, _done = checkpoint()
                    notes.append(
                        "WAL checkpoint busy (a reader or writer was active): skipped"
                        if busy
                        else "WAL checkpointed and truncated"
                    )
            return "; ".join(notes)

        return run


def checkpoint_on(conn: apsw.Connection) -> Checkpoint:
    """A `Checkpoint` on a connection that is not inside a transaction."""

    def run() -> tuple[int, int, int]:
        row = cast(tuple[int, int, int], conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").get)
        return int(row[0]), int(row[1]), int(row[2])

    return run
