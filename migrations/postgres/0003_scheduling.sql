-- Per-build scheduling options (issue 5); PostgreSQL flavour of
-- migrations/sqlite/0003_scheduling.sql.
ALTER TABLE builds ADD COLUMN defer_until BIGINT;
ALTER TABLE builds ADD COLUMN timeout_seconds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN max_silent_seconds INTEGER NOT NULL DEFAULT 0;
CREATE INDEX builds_derivation_state ON builds (derivation, state);
