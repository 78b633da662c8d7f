-- Rules as data; PostgreSQL flavour of
-- migrations/sqlite/0007_attempt_kind_failed_input.sql.
ALTER TABLE attempts ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE builds ADD COLUMN failed_input TEXT NOT NULL DEFAULT '';
ALTER TABLE builds ADD COLUMN failed_build TEXT NOT NULL DEFAULT '';

UPDATE attempts SET kind = CASE
	WHEN reason LIKE 'waiting for inputs: %' THEN 'waiting-for-inputs'
	WHEN reason LIKE 'setup-failure%' OR reason LIKE 'infrastructure: setup-failure%' THEN 'setup'
	WHEN reason LIKE 'verification%' OR reason LIKE 'infrastructure: verification%' THEN 'verification'
	WHEN outcome = 'requeued' THEN 'infrastructure'
	ELSE 'build'
END
WHERE outcome IN ('failed', 'requeued');

UPDATE builds SET failed_input = m.parts[1], failed_build = m.parts[2]
FROM (SELECT id AS mid, regexp_match(failure_reason, '^dependency failed: input (.*) \(build (.*)\)$') AS parts
	FROM builds WHERE state = 'failed-dependency') AS m
WHERE builds.id = m.mid AND m.parts IS NOT NULL;
