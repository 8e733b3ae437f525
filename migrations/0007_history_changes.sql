-- pipelined schema, version 7: what an `updated` history row changed, and stage
-- changes that are not moves.
--
-- changes: for `updated`, a JSON object {"field": [old, new], ...} of the changed
-- story fields (depends_on's values are its JSON text; blocked is 0/1).
--
-- A stage change is a `moved` row only when the story's file really moved. When a
-- copy in another stage wins the conflict (`cp` into another stage: the newest
-- file wins), the row is `conflict`; when the winning copy goes and the story falls
-- back to a copy it already had, `resolved`. Neither resets retry_count (so a
-- retry_count of 0 that comes with one is an `updated` change like any). The
-- daemon's writer names the kind in `stage_change_kind`, filled and emptied within
-- the commit; anything else that changes a stage (rebuild writes no updates) is a
-- move.

ALTER TABLE story_history ADD COLUMN changes TEXT;

CREATE TABLE stage_change_kind(story_id TEXT PRIMARY KEY, kind TEXT NOT NULL);

DROP TRIGGER story_history_changed;

CREATE TRIGGER story_history_changed AFTER UPDATE ON pipeline_items
BEGIN
  INSERT INTO story_history(at, story_id, kind, from_stage, to_stage, fields)
  SELECT coalesce(new.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
         new.id,
         coalesce((SELECT kind FROM stage_change_kind WHERE story_id = new.id), 'moved'),
         old.stage, new.stage, NULL
  WHERE old.stage IS NOT new.stage;

  INSERT INTO story_history(at, story_id, kind, from_stage, to_stage, fields, changes)
  SELECT coalesce(new.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
         new.id, 'updated', new.stage, new.stage, changed.list, changed.pairs
  FROM (SELECT json_group_array(f) AS list, json_group_object(f, json_array(o, n)) AS pairs
        FROM (
          SELECT 'name' AS f, old.name AS o, new.name AS n WHERE old.name IS NOT new.name
          UNION ALL SELECT 'agent', old.agent, new.agent WHERE old.agent IS NOT new.agent
          UNION ALL SELECT 'retry_count', old.retry_count, new.retry_count
                WHERE old.retry_count IS NOT new.retry_count
                AND NOT (old.stage IS NOT new.stage AND new.retry_count = 0
                         AND NOT EXISTS (SELECT 1 FROM stage_change_kind
                                         WHERE story_id = new.id))
          UNION ALL SELECT 'blocked', old.blocked, new.blocked
                WHERE old.blocked IS NOT new.blocked
          UNION ALL SELECT 'depends_on', old.depends_on, new.depends_on
                WHERE old.depends_on IS NOT new.depends_on
        )) AS changed
  WHERE changed.list <> '[]';
END;
