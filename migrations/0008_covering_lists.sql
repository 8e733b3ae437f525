-- pipelined schema, version 8: the list indexes of migration 0006 carry every column
-- a list shows (ITEM_COLUMNS of pipelined/schema.py: all but `content`).
--
-- A row of pipeline_items holds the story's content, a couple of kilobytes: a list
-- that looked each row up from its index read one table page per story, most of
-- `ls` at 10,000 stories (3,300 pages for one stage). Covering, a list reads only
-- the index, in order. The expressions are those of 0006 (STAGE_NUMBER_SQL and
-- STORY_NUMBER_SQL of store/queries.py, as written there; tests/test_queries.py
-- checks both the text and the plans).
DROP INDEX pipeline_items_order;
CREATE INDEX pipeline_items_order ON pipeline_items(
  (CASE WHEN stage GLOB '[0-9]*_*' AND substr(stage, 1, instr(stage, '_') - 1) NOT GLOB '*[^0-9]*' THEN CAST(stage AS INTEGER) ELSE 4611686018427387904 END),
  stage,
  (CASE WHEN instr(id, '_') <= 19 THEN CAST(id AS INTEGER) ELSE -1 END),
  id,
  blocked,
  name, agent, retry_count, depends_on, created_at, updated_at);
DROP INDEX pipeline_items_in_stage;
CREATE INDEX pipeline_items_in_stage ON pipeline_items(
  stage,
  (CASE WHEN instr(id, '_') <= 19 THEN CAST(id AS INTEGER) ELSE -1 END),
  id,
  blocked,
  name, agent, retry_count, depends_on, created_at, updated_at);
DROP INDEX pipeline_items_agent;
CREATE INDEX pipeline_items_agent ON pipeline_items(
  agent,
  (CASE WHEN stage GLOB '[0-9]*_*' AND substr(stage, 1, instr(stage, '_') - 1) NOT GLOB '*[^0-9]*' THEN CAST(stage AS INTEGER) ELSE 4611686018427387904 END),
  stage,
  (CASE WHEN instr(id, '_') <= 19 THEN CAST(id AS INTEGER) ELSE -1 END),
  id,
  blocked,
  name, retry_count, depends_on, created_at, updated_at);
