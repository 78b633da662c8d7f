-- Cache retention; PostgreSQL flavour of
-- migrations/sqlite/0008_cache_retention.sql.
CREATE TABLE cache_pins (
	path       TEXT   PRIMARY KEY,
	reason     TEXT   NOT NULL DEFAULT '',
	created_at BIGINT,
	created_by TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE cache_access (
	hash_part   TEXT   PRIMARY KEY,
	last_access BIGINT NOT NULL
);

ALTER TABLE agents ADD COLUMN archived_at BIGINT;

CREATE INDEX builds_ended ON builds (ended_at);
