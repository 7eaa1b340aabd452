"""The schema, as an ordered list of migrations keyed by `PRAGMA user_version`.

Migration N (1-based) takes a database from version N-1 to N. All pending
migrations run in one transaction together with the application_id and
user_version updates, so a crash leaves either the old or the new schema.
"""

from __future__ import annotations

import apsw
from reverie.errors import SchemaTooNew
from reverie.store.connection import APPLICATION_ID

_V1 = """
CREATE TABLE memories (
    id               INTEGER PRIMARY KEY,
    uid              TEXT    NOT NULL UNIQUE,
    workspace        TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    content          TEXT    NOT NULL,
    tags             TEXT    NOT NULL DEFAULT '[]',   -- JSON array
    importance       REAL    NOT NULL DEFAULT 0.5,
    tier             TEXT    NOT NULL DEFAULT 'short'
                     CHECK (tier IN ('short', 'long', 'archived')),
    state            TEXT    NOT NULL DEFAULT 'active'
                     CHECK (state IN ('active', 'superseded', 'forgotten')),
    superseded_by    INTEGER REFERENCES memories(id),
    provenance       TEXT    NOT NULL DEFAULT '{}',   -- JSON: events, turns, parents
    created_at       REAL    NOT NULL,                -- unix seconds
    observed_at      REAL    NOT NULL,
    updated_at       REAL    NOT NULL,
    last_recalled_at REAL,
    recall_count     INTEGER NOT NULL DEFAULT 0,
    distinct_queries INTEGER NOT NULL DEFAULT 0,
    content_hash     TEXT    NOT NULL,
    metadata         TEXT    NOT NULL DEFAULT '{}'    -- JSON object
) STRICT;
CREATE INDEX memories_by_hash ON memories (workspace, content_hash);

-- Full text over active memories only: the triggers keep superseded and
-- forgotten rows out of the index, so a search never has to skip them.
-- Tags are indexed as their JSON text: the tokenizer splits `["a","b"]` into
-- the words a and b, which spares a json_each() subquery on every write.
CREATE VIRTUAL TABLE memories_fts USING fts5 (
    content, tags,
    content = 'memories', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
-- Small commits each add an FTS5 segment; merging less eagerly than the
-- default (4) halves the write cost. Deep sleep runs 'optimize' to compact.
INSERT INTO memories_fts (memories_fts, rank) VALUES ('automerge', 8);
CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories
WHEN new.state = 'active' BEGIN
    INSERT INTO memories_fts (rowid, content, tags) VALUES (new.id, new.content, new.tags);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories
WHEN old.state = 'active' BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, tags)
    VALUES ('delete', old.id, old.content, old.tags);
END;
-- One trigger, two statements in this order: SQLite runs several triggers
-- on one event in reverse order of creation, and inserting the new text
-- before deleting the old one corrupts the index.
CREATE TRIGGER memories_fts_update AFTER UPDATE OF content, tags, state ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, tags)
    SELECT 'delete', old.id, old.content, old.tags WHERE old.state = 'active';
    INSERT INTO memories_fts (rowid, content, tags)
    SELECT new.id, new.content, new.tags WHERE new.state = 'active';
END;

-- Raw, append-only log posted by harness hooks (filled by the events feature).
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    idem_key    TEXT NOT NULL UNIQUE,
    harness     TEXT NOT NULL,
    session_id  TEXT,
    workspace   TEXT NOT NULL,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  REAL NOT NULL
) STRICT;
CREATE INDEX events_by_session ON events (session_id, id);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    workspace     TEXT NOT NULL,
    harness       TEXT NOT NULL DEFAULT '',
    started_at    REAL NOT NULL,
    last_seen_at  REAL NOT NULL,
    ended_at      REAL,
    status        TEXT NOT NULL DEFAULT 'active',
    summary       TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}'
) STRICT;

-- Which memory was returned for which query (for promotion while dreaming).
CREATE TABLE recalls (
    id          INTEGER PRIMARY KEY,
    memory_id   INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    query_hash  TEXT    NOT NULL,
    score       REAL    NOT NULL,
    recalled_at REAL    NOT NULL
) STRICT;
CREATE INDEX recalls_by_memory ON recalls (memory_id, query_hash);

-- TTL locks for the dream phases, with fencing tokens.
CREATE TABLE locks (
    name        TEXT PRIMARY KEY,
    owner       TEXT    NOT NULL,
    token       INTEGER NOT NULL,
    acquired_at REAL    NOT NULL,
    expires_at  REAL    NOT NULL
) STRICT;

-- The ledger of dream runs and every operation they applied.
CREATE TABLE dream_runs (
    id              INTEGER PRIMARY KEY,
    phase           TEXT    NOT NULL,
    trigger         TEXT    NOT NULL,
    started_at      REAL    NOT NULL,
    completed_at    REAL,
    duration_ms     INTEGER,
    items_processed INTEGER NOT NULL DEFAULT 0,
    counts          TEXT    NOT NULL DEFAULT '{}',
    notes           TEXT    NOT NULL DEFAULT '',
    errors          TEXT    NOT NULL DEFAULT '[]',
    status          TEXT    NOT NULL DEFAULT 'running'
) STRICT;
CREATE TABLE dream_ops (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES dream_runs(id),
    seq         INTEGER NOT NULL,
    op          TEXT    NOT NULL,
    before_ids  TEXT    NOT NULL DEFAULT '[]',
    after_ids   TEXT    NOT NULL DEFAULT '[]',
    data        TEXT    NOT NULL DEFAULT '{}'
) STRICT;
"""

# Vectors live in SQLite too (the HNSW index is derived data). Each row
# records its model, so a model change re-embeds side by side and the index
# is never mixed. `seq` orders every change to a memory, so a saved index
# that reflects changes up to N catches up with `WHERE seq > N`.
_V2 = """
ALTER TABLE memories ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE memories SET seq = id;
CREATE INDEX memories_by_seq ON memories (seq);
CREATE TABLE embeddings (
    memory_id    INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    model        TEXT    NOT NULL,
    dim          INTEGER NOT NULL,
    content_hash TEXT    NOT NULL,   -- of the text the vector was computed from
    vector       BLOB    NOT NULL,   -- float32, little-endian, L2-normalised
    PRIMARY KEY (memory_id, model)
) STRICT, WITHOUT ROWID;
CREATE INDEX embeddings_by_model ON embeddings (model);
"""

# Issue 4. One migration per feature, each owned by its store module's
# author; until a release ships, a migration not yet released may still change.
_V3_EVENTS = """
-- events (store/events.py). `created_at` is when the event happened (as
-- posted, else when received); `received_at` when the daemon stored it (a
-- spooled event arrives later).
ALTER TABLE events ADD COLUMN received_at REAL;
CREATE INDEX events_by_workspace ON events (workspace, id);
-- Capture per workspace: a row with capture = 0 makes the daemon drop that
-- workspace's events. No row means on.
CREATE TABLE capture_settings (
    workspace   TEXT PRIMARY KEY,
    capture     INTEGER NOT NULL CHECK (capture IN (0, 1)),
    updated_at  REAL    NOT NULL
) STRICT;
"""
_V4_SESSIONS = """
-- Sessions (store/sessions.py): what a session set out to do and its last
-- progress note; `summary` (V1) is what it did, given when it ended.
ALTER TABLE sessions ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN progress TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_by_workspace ON sessions (workspace, status, last_seen_at);
CREATE TABLE session_logs (
    id          INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    at          REAL NOT NULL,
    level       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL
) STRICT;
CREATE INDEX session_logs_by_session ON session_logs (session_id, id);
-- One document per workspace (store/world.py); every version is kept.
CREATE TABLE world_state (
    id          INTEGER PRIMARY KEY,
    workspace   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    content     TEXT    NOT NULL,
    updated_at  REAL    NOT NULL,
    updated_by  TEXT    NOT NULL DEFAULT '',
    UNIQUE (workspace, version)
) STRICT;
-- Claims (store/claims.py): one holder per resource; held only while the
-- holding session is active and not stale (decided when read).
CREATE TABLE resource_locks (
    workspace   TEXT NOT NULL,
    resource    TEXT NOT NULL,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    claimed_at  REAL NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (workspace, resource)
) STRICT;
CREATE INDEX resource_locks_by_session ON resource_locks (session_id);
-- The briefing's standing memories (store/brief.py): a workspace's active
-- long-term ones by importance. Partial, so that the short-term memories
-- written on every event never pay for it.
CREATE INDEX memories_long ON memories (workspace, importance)
WHERE tier = 'long' AND state = 'active';
"""
_V5_EPISODES = """
-- A task's run (store/episodes.py). The counters are kept on the row as
-- steps arrive, so that numbering a step, listing and scoring read no steps.
CREATE TABLE episodes (
    id            INTEGER PRIMARY KEY,
    workspace     TEXT    NOT NULL,
    session_id    TEXT,
    description   TEXT    NOT NULL,
    task_type     TEXT    NOT NULL,
    context       TEXT    NOT NULL DEFAULT '{}',   -- JSON: language, framework, domain, tags
    started_at    REAL    NOT NULL,
    completed_at  REAL,
    outcome       TEXT    CHECK (outcome IN ('success', 'partial', 'failure')),
    notes         TEXT    NOT NULL DEFAULT '',
    reward        REAL,
    reward_detail TEXT,                            -- JSON: the reward's components
    step_count    INTEGER NOT NULL DEFAULT 0,
    error_count   INTEGER NOT NULL DEFAULT 0,
    latency_ms    INTEGER NOT NULL DEFAULT 0,
    memory_id     INTEGER REFERENCES memories(id) ON DELETE SET NULL,
    CHECK ((completed_at IS NULL) = (outcome IS NULL))
) STRICT;
CREATE INDEX episodes_by_workspace ON episodes (workspace, id);
CREATE INDEX episodes_by_memory ON episodes (memory_id) WHERE memory_id IS NOT NULL;
CREATE TABLE steps (
    episode_id  INTEGER NOT NULL REFERENCES episodes(id) ON DELETE CASCADE,
    n           INTEGER NOT NULL,                  -- 1, 2, ... in arrival order
    tool        TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    parameters  TEXT    NOT NULL DEFAULT '{}',     -- JSON, redacted
    success     INTEGER NOT NULL CHECK (success IN (0, 1)),
    result      TEXT    NOT NULL DEFAULT '',
    error       TEXT    NOT NULL DEFAULT '',
    latency_ms  INTEGER NOT NULL DEFAULT 0,
    at          REAL    NOT NULL,
    PRIMARY KEY (episode_id, n)
) STRICT, WITHOUT ROWID;
"""

_V6_DREAMS = """
-- ledger (phases/ledger.py): when a run was undone (its status becomes
-- 'undone'); status queries read runs per phase, undo reads a run's ops.
ALTER TABLE dream_runs ADD COLUMN undone_at REAL;
CREATE INDEX dream_runs_by_phase ON dream_runs (phase, started_at);
CREATE INDEX dream_ops_by_run ON dream_ops (run_id, seq);
"""

# -- memory versions (store/versions.py)
_V7_VERSIONS = """
-- Snapshots of a memory taken before each `update` overwrote it
-- (store/versions.py); deep sleep prunes them past a retention count and age.
CREATE TABLE memory_versions (
    memory_id    INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,                -- 1, 2, ... per memory
    content      TEXT    NOT NULL,
    tags         TEXT    NOT NULL DEFAULT '[]',   -- JSON array
    importance   REAL    NOT NULL,
    pinned       INTEGER NOT NULL CHECK (pinned IN (0, 1)),
    metadata     TEXT    NOT NULL DEFAULT '{}',   -- JSON object
    content_hash TEXT    NOT NULL,
    written_at   REAL    NOT NULL,                -- the replaced row's updated_at
    replaced_at  REAL    NOT NULL,
    reason       TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (memory_id, version)
) STRICT, WITHOUT ROWID;
"""

# -- REM's incremental runs (phases/rem_view.py): a completed run records the
# highest memory `seq` its plan read (every write to a memory takes a higher one,
# so "changed since" is `seq > watermark`, whatever the clocks did) and the
# memories it had to leave for the next run (its caps), as a JSON array of ids.
_V8_REM_WATERMARK = """
ALTER TABLE dream_runs ADD COLUMN watermark INTEGER;
ALTER TABLE dream_runs ADD COLUMN pending TEXT NOT NULL DEFAULT '[]';
"""

MIGRATIONS: tuple[str, ...] = (
    _V1,
    _V2,
    _V3_EVENTS,
    _V4_SESSIONS,
    _V5_EPISODES,
    _V6_DREAMS,
    _V7_VERSIONS,  # memory versions
    _V8_REM_WATERMARK,
)
LATEST = len(MIGRATIONS)


def schema_version(conn: apsw.Connection) -> int:
    return int(conn.pragma("user_version"))


def refuse_newer(version: int) -> None:
    if version > LATEST:
        from reverie import __version__

        raise SchemaTooNew(
            f"the database has schema version {version}, but reverie {__version__} "
            f"knows versions up to {LATEST}: upgrade reverie (the database was not changed)"
        )


def migrate(conn: apsw.Connection) -> int:
    """Bring the database to LATEST; return the version it had before."""
    current = schema_version(conn)
    refuse_newer(current)
    if current == LATEST:
        return current
    with conn:
        for script in MIGRATIONS[current:]:
            conn.execute(script)
        conn.pragma("application_id", APPLICATION_ID)
        conn.pragma("user_version", LATEST)
    return current
