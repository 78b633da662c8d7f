-- Input derivations of each build (issue 5), so that the queue is rebuilt
-- at start without re-reading every .drv. One column rather than a child
-- table: the inputs are only ever read whole, with the build. The .drv
-- paths are joined by newlines (no store path contains one); a path in the
-- build's own store directory is kept as its base name. '' means no
-- inputs; NULL means not recorded (builds from before this migration,
-- whose .drv is re-read as before).
ALTER TABLE builds ADD COLUMN input_drvs TEXT;
-- The scheduled builds in recording order: the start-up rebuild walks them
-- a page at a time (keyset on seq). Not a partial index (WHERE state =
-- 'scheduled'): without ANALYZE statistics SQLite preferred builds_queue
-- for such a query and sorted the whole queue for every page.
CREATE INDEX builds_state_seq ON builds (state, seq);
