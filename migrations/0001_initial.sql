-- pipelined schema, version 1.
-- pipeline_items is the contract other programs read (see README, "Database").

CREATE TABLE pipeline_items(
  id TEXT PRIMARY KEY, name TEXT, stage TEXT NOT NULL, agent TEXT,
  retry_count INTEGER, blocked INTEGER, depends_on TEXT, content TEXT,
  created_at TEXT, updated_at TEXT);      -- times in RFC 3339 UTC

CREATE INDEX pipeline_items_stage ON pipeline_items(stage);
CREATE INDEX pipeline_items_agent ON pipeline_items(agent);

-- Front-matter keys that are not story fields (a JSON object) and the
-- parse errors of the file that won (a JSON array of text, or NULL).
CREATE TABLE story_extras(
  id TEXT PRIMARY KEY REFERENCES pipeline_items(id) ON DELETE CASCADE,
  extra TEXT NOT NULL DEFAULT '{}',
  errors TEXT);

-- Persisted pycrdt updates, applied in seq order at startup.
CREATE TABLE crdt_updates(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  data BLOB NOT NULL,
  committed_at TEXT NOT NULL);

-- One row per story file seen on disk at the last sync. Two rows with the
-- same story_id are a conflict; winner says which one the pipeline follows.
CREATE TABLE file_signatures(
  path TEXT PRIMARY KEY,            -- '<stage>/<id>.md', relative to the root
  story_id TEXT NOT NULL,
  stage TEXT NOT NULL,
  mtime_ns INTEGER NOT NULL,
  size INTEGER NOT NULL,
  inode INTEGER NOT NULL,
  winner INTEGER NOT NULL DEFAULT 1);

CREATE INDEX file_signatures_story ON file_signatures(story_id);

-- The highest story number ever seen, deleted stories included (rule 7).
CREATE TABLE story_numbers(
  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
  high_water INTEGER NOT NULL);

INSERT INTO story_numbers(singleton, high_water) VALUES (1, 0);

-- Small facts of the daemon: its pycrdt client id, the last sync time.
CREATE TABLE daemon_meta(
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL);
