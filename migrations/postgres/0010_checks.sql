-- Reproducibility checks; PostgreSQL flavour of
-- migrations/sqlite/0010_checks.sql.
CREATE TABLE checks (
	id             TEXT    PRIMARY KEY,
	derivation     TEXT    NOT NULL,
	system         TEXT    NOT NULL,
	agents         INTEGER NOT NULL,
	against_cache  BOOLEAN NOT NULL DEFAULT FALSE,
	priority       INTEGER NOT NULL DEFAULT 0,
	state          TEXT    NOT NULL CHECK (state IN ('pending', 'reproducible', 'unreproducible', 'failed')),
	unreproducible TEXT    NOT NULL DEFAULT '', -- output names, space-separated
	created_at     BIGINT,
	ended_at       BIGINT
);
CREATE INDEX checks_state ON checks (state, created_at);
CREATE INDEX checks_derivation ON checks (derivation, created_at);

CREATE TABLE check_sides (
	check_id TEXT    NOT NULL REFERENCES checks (id) ON DELETE CASCADE,
	side     INTEGER NOT NULL,
	build_id TEXT    NOT NULL DEFAULT '',
	agent_id TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (check_id, side)
);
CREATE INDEX check_sides_build ON check_sides (build_id);

CREATE TABLE check_outputs (
	check_id    TEXT    NOT NULL,
	side        INTEGER NOT NULL,
	name        TEXT    NOT NULL,
	path        TEXT    NOT NULL,
	nar_hash    TEXT    NOT NULL,
	nar_size    BIGINT  NOT NULL,
	file        TEXT    NOT NULL,
	compression TEXT    NOT NULL,
	PRIMARY KEY (check_id, side, name),
	FOREIGN KEY (check_id, side) REFERENCES check_sides (check_id, side) ON DELETE CASCADE
);
