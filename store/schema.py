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
"""
_V4_SESSIONS = """
"""
_V5_EPISODES = """
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3_EVENTS, _V4_SESSIONS, _V5_EPISODES)
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
