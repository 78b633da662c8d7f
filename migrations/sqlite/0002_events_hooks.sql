-- Events, hook progress and per-attempt hardware (issue 6).
--
-- events is append-only. id is the resume position for `events --since`
-- and for hooks; AUTOINCREMENT keeps ids from being reused after a delete,
-- and with SQLite's single writer ids also increase in commit order, so a
-- reader that saw id N never later finds a new row below N. data holds the
-- rest of the event as JSON (db.EventData).
CREATE TABLE events (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	type     TEXT    NOT NULL,
	at       INTEGER NOT NULL,
	build_id TEXT,
	agent_id TEXT,
	data     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_type ON events (type, id);
CREATE INDEX events_build ON events (build_id, id);

-- A hook has finished every matching event up to cursor, plus the ids in
-- hook_done (finished out of order because hooks run in parallel).
CREATE TABLE hook_cursors (
	hook   TEXT    PRIMARY KEY,
	cursor INTEGER NOT NULL
);
CREATE TABLE hook_done (
	hook     TEXT    NOT NULL,
	event_id INTEGER NOT NULL,
	PRIMARY KEY (hook, event_id)
);

-- What the agent reported when the attempt started (db.Hardware as JSON).
ALTER TABLE attempts ADD COLUMN hardware TEXT NOT NULL DEFAULT '';
