-- The order of `ls` and of paged lists (MCP, HTTP): the stage's number, the stage,
-- the story number, the id; in one stage or for one agent, the same after it. The
-- expressions are STAGE_NUMBER_SQL and STORY_NUMBER_SQL of store/queries.py as
-- written there (SQLite uses an index on an expression only for the same
-- expression; tests/test_queries.py checks both). A page then reads its rows in
-- order instead of sorting every matching row, content and all; `blocked` rides
-- along so that filtering on it (and counting) reads no row either.
CREATE INDEX pipeline_items_order ON pipeline_items(
  (CASE WHEN stage GLOB '[0-9]*_*' AND substr(stage, 1, instr(stage, '_') - 1) NOT GLOB '*[^0-9]*' THEN CAST(stage AS INTEGER) ELSE 4611686018427387904 END),
  stage,
  (CASE WHEN instr(id, '_') <= 19 THEN CAST(id AS INTEGER) ELSE -1 END),
  id,
  blocked);
CREATE INDEX pipeline_items_in_stage ON pipeline_items(
  stage,
  (CASE WHEN instr(id, '_') <= 19 THEN CAST(id AS INTEGER) ELSE -1 END),
  id,
  blocked);
DROP INDEX pipeline_items_agent;
CREATE INDEX pipeline_items_agent ON pipeline_items(
  agent,
  (CASE WHEN stage GLOB '[0-9]*_*' AND substr(stage, 1, instr(stage, '_') - 1) NOT GLOB '*[^0-9]*' THEN CAST(stage AS INTEGER) ELSE 4611686018427387904 END),
  stage,
  (CASE WHEN instr(id, '_') <= 19 THEN CAST(id AS INTEGER) ELSE -1 END),
  id,
  blocked);
