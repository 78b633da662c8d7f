-- Per-build scheduling options (issue 5): a build may be held back until a
-- time, and carries its own timeout and max-silent-time (seconds; 0 means the
-- coordinator's default at dispatch).
ALTER TABLE builds ADD COLUMN defer_until INTEGER;
ALTER TABLE builds ADD COLUMN timeout_seconds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN max_silent_seconds INTEGER NOT NULL DEFAULT 0;
-- "Is there a successful build of this derivation" when resolving inputs.
CREATE INDEX builds_derivation_state ON builds (derivation, state);
