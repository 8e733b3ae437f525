-- pipelined schema: full-text search (`pipelined search`).
-- An external-content FTS5 index over pipeline_items' id, name and content: it
-- stores only the index, reads the text from pipeline_items (for snippet()),
-- and is kept by triggers, so it changes in the same transaction as the rows.
-- It depends on 0001 only. unicode61 with remove_diacritics 2 folds case and
-- accents ("cafe" finds "Café"); '_' separates tokens, so "login" finds
-- 10_story_login. Prefix indexes make "log*" cheap.
-- If it ever drifts (it cannot through the daemon), this rebuilds it:
--   INSERT INTO pipeline_search(pipeline_search) VALUES ('rebuild');

CREATE VIRTUAL TABLE pipeline_search USING fts5(
  id, name, content,
  content='pipeline_items', content_rowid='rowid',
  tokenize='unicode61 remove_diacritics 2',
  prefix='2 3');

CREATE TRIGGER pipeline_search_ai AFTER INSERT ON pipeline_items BEGIN
  INSERT INTO pipeline_search(rowid, id, name, content)
  VALUES (new.rowid, new.id, new.name, new.content);
END;

CREATE TRIGGER pipeline_search_ad AFTER DELETE ON pipeline_items BEGIN
  INSERT INTO pipeline_search(pipeline_search, rowid, id, name, content)
  VALUES ('delete', old.rowid, old.id, old.name, old.content);
END;

-- A move or a field change leaves the indexed text alone: no re-index then.
CREATE TRIGGER pipeline_search_au AFTER UPDATE ON pipeline_items
WHEN old.id IS NOT new.id OR old.name IS NOT new.name OR old.content IS NOT new.content
  OR old.rowid IS NOT new.rowid
BEGIN
  INSERT INTO pipeline_search(pipeline_search, rowid, id, name, content)
  VALUES ('delete', old.rowid, old.id, old.name, old.content);
  INSERT INTO pipeline_search(rowid, id, name, content)
  VALUES (new.rowid, new.id, new.name, new.content);
END;

-- The rows that exist before this migration.
INSERT INTO pipeline_search(pipeline_search) VALUES ('rebuild');
