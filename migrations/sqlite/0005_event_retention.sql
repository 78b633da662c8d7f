-- Event retention (gbc coordinator --event-retention). The log is pruned
-- only from its start, so one number says what is gone: every event with
-- id <= pruned_through was deleted, every event above it is kept. `events
-- --since` reads it to report pruned events instead of a silent gap. The
-- single row appears with the first prune (no row: nothing pruned), so a
-- freshly migrated database stays empty for migrate-data.
CREATE TABLE event_retention (
	id             INTEGER PRIMARY KEY CHECK (id = 1),
	pruned_through INTEGER NOT NULL
);
