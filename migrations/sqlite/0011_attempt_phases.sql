-- Attempt phases (issue 12): when an attempt entered each phase after
-- allocation, in unix milliseconds, NULL while it has not. Building is
-- started_at; each phase ends when the next recorded one begins, the last
-- when the attempt ends (ended_at).
ALTER TABLE attempts ADD COLUMN preparing_at INTEGER;
ALTER TABLE attempts ADD COLUMN uploading_at INTEGER;
ALTER TABLE attempts ADD COLUMN verifying_at INTEGER;
ALTER TABLE attempts ADD COLUMN publishing_at INTEGER;
