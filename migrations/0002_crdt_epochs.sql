-- pipelined schema, version 2: compaction of the persisted pycrdt history.
-- A 'snapshot' row replaces every row before it (written in the same
-- transaction that deletes them). A rebase starts a new epoch: a new document
-- built from the current state; a peer that synced an older epoch must resync.

ALTER TABLE crdt_updates ADD COLUMN kind TEXT NOT NULL DEFAULT 'update';
ALTER TABLE crdt_updates ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;

CREATE TABLE crdt_epochs(
  epoch INTEGER PRIMARY KEY,
  client_id INTEGER NOT NULL,
  started_at TEXT NOT NULL,
  reason TEXT NOT NULL);

INSERT INTO crdt_epochs(epoch, client_id, started_at, reason)
SELECT 1, coalesce((SELECT CAST(value AS INTEGER) FROM daemon_meta WHERE key = 'client_id'), 0),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'first document';
