-- Event retention; PostgreSQL flavour of
-- migrations/sqlite/0005_event_retention.sql (every event with
-- id <= pruned_through was deleted, every event above it is kept).
CREATE TABLE event_retention (
	id             INTEGER PRIMARY KEY CHECK (id = 1),
	pruned_through BIGINT  NOT NULL
);
