-- Cache retention: pins (kept with their closure until unpinned), the
-- last time each cached path was fetched (written in batches by the
-- coordinator, one row per path), and archived agents (hidden from
-- listings, their history kept).
CREATE TABLE cache_pins (
	path       TEXT    PRIMARY KEY,
	reason     TEXT    NOT NULL DEFAULT '',
	created_at INTEGER,
	created_by TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE cache_access (
	hash_part   TEXT    PRIMARY KEY,
	last_access INTEGER NOT NULL
);

ALTER TABLE agents ADD COLUMN archived_at INTEGER;

-- builds prune selects finished builds by end time.
CREATE INDEX builds_ended ON builds (ended_at);
