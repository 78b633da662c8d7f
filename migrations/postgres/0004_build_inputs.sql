-- Input derivations of each build (issue 5); PostgreSQL flavour of
-- migrations/sqlite/0004_build_inputs.sql (newline-joined .drv paths, base
-- names for the build's own store directory, NULL = not recorded).
ALTER TABLE builds ADD COLUMN input_drvs TEXT;
CREATE INDEX builds_state_seq ON builds (state, seq);
