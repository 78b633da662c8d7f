-- Rules as data: an attempt records why it ended (kind), so retry limits
-- count kinds, not reason prefixes; a failed-dependency build records the
-- input that failed and its build, so readers need not parse the reason.
ALTER TABLE attempts ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE builds ADD COLUMN failed_input TEXT NOT NULL DEFAULT '';
ALTER TABLE builds ADD COLUMN failed_build TEXT NOT NULL DEFAULT '';

-- Rows written before: the kinds follow from the reasons the coordinator
-- wrote then (this is the last place that reads them).
UPDATE attempts SET kind = CASE
	WHEN reason LIKE 'waiting for inputs: %' THEN 'waiting-for-inputs'
	WHEN reason LIKE 'setup-failure%' OR reason LIKE 'infrastructure: setup-failure%' THEN 'setup'
	WHEN reason LIKE 'verification%' OR reason LIKE 'infrastructure: verification%' THEN 'verification'
	WHEN outcome = 'requeued' THEN 'infrastructure'
	ELSE 'build'
END
WHERE outcome IN ('failed', 'requeued');

-- "dependency failed: input X (build Y)"
UPDATE builds SET
	failed_input = substr(failure_reason, 26, instr(substr(failure_reason, 26), ' (build ') - 1),
	failed_build = substr(failure_reason, 26 + instr(substr(failure_reason, 26), ' (build ') + 7,
		length(failure_reason) - 25 - instr(substr(failure_reason, 26), ' (build ') - 8)
WHERE state = 'failed-dependency' AND failure_reason LIKE 'dependency failed: input % (build %)';
