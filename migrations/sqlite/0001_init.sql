-- Initial schema. Conventions (kept so a PostgreSQL copy differs only in
-- types): times are INTEGER unix milliseconds UTC, NULL meaning "never";
-- booleans are INTEGER 0/1; list-valued fields live in child tables with a
-- pos column so they round-trip in submission order.

CREATE TABLE agents (
	id           TEXT    PRIMARY KEY,
	name         TEXT    NOT NULL,
	active       INTEGER NOT NULL DEFAULT 1,
	created_at   INTEGER,
	last_seen_at INTEGER
);

CREATE TABLE keys (
	fingerprint    TEXT PRIMARY KEY,
	authorized_key TEXT NOT NULL,
	role           TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'reader', 'agent')),
	agent_id       TEXT REFERENCES agents (id),
	comment        TEXT NOT NULL DEFAULT '',
	created_at     INTEGER,
	CHECK ((role = 'agent') = (agent_id IS NOT NULL))
);
CREATE INDEX keys_agent ON keys (agent_id);

-- seq orders listings (newest first) and breaks ties between builds
-- submitted in the same millisecond; id is the public identity.
CREATE TABLE builds (
	seq            INTEGER PRIMARY KEY,
	id             TEXT    NOT NULL UNIQUE,
	derivation     TEXT    NOT NULL,
	system         TEXT    NOT NULL,
	priority       INTEGER NOT NULL DEFAULT 0,
	state          TEXT    NOT NULL CHECK (state IN ('scheduled', 'allocated', 'started',
	                           'succeeded', 'failed', 'canceled', 'failed-dependency')),
	agent_id       TEXT    REFERENCES agents (id), -- agent of the latest attempt
	attempts       INTEGER NOT NULL DEFAULT 0,     -- number of the latest attempt
	created_at     INTEGER,
	started_at     INTEGER,
	ended_at       INTEGER,
	failure_reason TEXT    NOT NULL DEFAULT ''
);
-- The queue is rebuilt from scheduled builds in priority order.
CREATE INDEX builds_queue ON builds (state, priority DESC, created_at, seq);
-- Builds held by an agent (reconnect, absence).
CREATE INDEX builds_agent ON builds (agent_id, state);
-- Listings, newest first.
CREATE INDEX builds_created ON builds (created_at, seq);
CREATE INDEX builds_derivation ON builds (derivation);

CREATE TABLE build_tags (
	build_id TEXT    NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	pos      INTEGER NOT NULL,
	key      TEXT    NOT NULL,
	value    TEXT    NOT NULL,
	PRIMARY KEY (build_id, pos)
);
CREATE INDEX build_tags_kv ON build_tags (key, value);

CREATE TABLE build_features (
	build_id TEXT    NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	pos      INTEGER NOT NULL,
	feature  TEXT    NOT NULL,
	PRIMARY KEY (build_id, pos)
);

CREATE TABLE build_outputs (
	build_id TEXT    NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	name     TEXT    NOT NULL,
	pos      INTEGER NOT NULL,
	path     TEXT    NOT NULL,
	PRIMARY KEY (build_id, name)
);
-- "Which build produces this store path" for dependency resolution.
CREATE INDEX build_outputs_path ON build_outputs (path);

CREATE TABLE attempts (
	build_id     TEXT    NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	number       INTEGER NOT NULL,
	agent_id     TEXT    NOT NULL REFERENCES agents (id),
	allocated_at INTEGER,
	started_at   INTEGER,
	ended_at     INTEGER,
	outcome      TEXT    NOT NULL DEFAULT '',
	reason       TEXT    NOT NULL DEFAULT '',
	exit_code    INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (build_id, number)
);
CREATE INDEX attempts_agent ON attempts (agent_id);

CREATE TABLE results (
	build_id    TEXT    NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	name        TEXT    NOT NULL,
	pos         INTEGER NOT NULL,
	path        TEXT    NOT NULL,
	nar_hash    TEXT    NOT NULL,
	nar_size    INTEGER NOT NULL,
	file_hash   TEXT    NOT NULL,
	file_size   INTEGER NOT NULL,
	compression TEXT    NOT NULL,
	file        TEXT    NOT NULL,
	PRIMARY KEY (build_id, name)
);
CREATE INDEX results_path ON results (path);

CREATE TABLE result_references (
	build_id  TEXT    NOT NULL,
	name      TEXT    NOT NULL,
	pos       INTEGER NOT NULL,
	reference TEXT    NOT NULL,
	PRIMARY KEY (build_id, name, pos),
	FOREIGN KEY (build_id, name) REFERENCES results (build_id, name) ON DELETE CASCADE
);
