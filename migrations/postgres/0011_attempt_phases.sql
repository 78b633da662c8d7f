-- Attempt phases; PostgreSQL flavour of
-- migrations/sqlite/0011_attempt_phases.sql.
ALTER TABLE attempts ADD COLUMN preparing_at BIGINT;
ALTER TABLE attempts ADD COLUMN uploading_at BIGINT;
ALTER TABLE attempts ADD COLUMN verifying_at BIGINT;
ALTER TABLE attempts ADD COLUMN publishing_at BIGINT;
