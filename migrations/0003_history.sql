-- pipelined schema, version 3: the history of every story (`pipelined log`,
-- `events`, `stats`). Written by triggers on pipeline_items, so each history
-- row is committed in the same transaction as the change it describes, by
-- whatever writes the table (the writer thread, rebuild), with no Python change.
--
-- kind: created (to_stage), moved (from_stage -> to_stage), updated (fields:
-- JSON array of the changed story fields, in the order name, agent,
-- retry_count, blocked, depends_on), deleted (from_stage).
-- A move resets retry_count to 0: that reset belongs to the move and is not an
-- `updated` row (a stage change with retry_count becoming 0 is taken as the
-- reset). Content-only edits change no story field and are not recorded.
-- Times are RFC 3339 UTC: the row's updated_at (the commit's time), or the
-- current time for a delete.

CREATE TABLE story_history(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL,
  story_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  from_stage TEXT,
  to_stage TEXT,
  fields TEXT);

CREATE INDEX story_history_story ON story_history(story_id);

-- An UPSERT that inserts fires this; one that updates fires the UPDATE trigger.
CREATE TRIGGER story_history_created AFTER INSERT ON pipeline_items
BEGIN
  INSERT INTO story_history(at, story_id, kind, from_stage, to_stage, fields)
  VALUES (coalesce(new.created_at, new.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
          new.id, 'created', NULL, new.stage, NULL);
END;

-- One trigger for both kinds, so a move is always recorded before the field
-- changes of the same commit.
CREATE TRIGGER story_history_changed AFTER UPDATE ON pipeline_items
BEGIN
  INSERT INTO story_history(at, story_id, kind, from_stage, to_stage, fields)
  SELECT coalesce(new.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
         new.id, 'moved', old.stage, new.stage, NULL
  WHERE old.stage IS NOT new.stage;

  INSERT INTO story_history(at, story_id, kind, from_stage, to_stage, fields)
  SELECT coalesce(new.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
         new.id, 'updated', new.stage, new.stage, changed.list
  FROM (SELECT (SELECT json_group_array(f) FROM (
          SELECT 'name' AS f WHERE old.name IS NOT new.name
          UNION ALL SELECT 'agent' WHERE old.agent IS NOT new.agent
          UNION ALL SELECT 'retry_count' WHERE old.retry_count IS NOT new.retry_count
                AND NOT (old.stage IS NOT new.stage AND new.retry_count = 0)
          UNION ALL SELECT 'blocked' WHERE old.blocked IS NOT new.blocked
          UNION ALL SELECT 'depends_on' WHERE old.depends_on IS NOT new.depends_on
        )) AS list) AS changed
  WHERE changed.list <> '[]';
END;

CREATE TRIGGER story_history_deleted AFTER DELETE ON pipeline_items
BEGIN
  INSERT INTO story_history(at, story_id, kind, from_stage, to_stage, fields)
  VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), old.id, 'deleted', old.stage, NULL, NULL);
END;
