-- Whether the winning file could not be read at the last sync (a chmod since then
-- changes no signature, so the daemon reads such files again at every start).
-- A column, not a pattern over the error text: messages may be reworded.
ALTER TABLE story_extras ADD COLUMN unreadable INTEGER NOT NULL DEFAULT 0;
UPDATE story_extras SET unreadable = 1 WHERE errors LIKE '%cannot read the file%';
