-- The builds page filtered by a tag walks the tag's builds newest first:
-- build_tags carries its build's seq (set on insert by a trigger, so no
-- writer has to know), and (key, value, build_seq) pages it by keyset like
-- the other filters, instead of sorting every build with that tag.
ALTER TABLE build_tags ADD COLUMN build_seq INTEGER;
UPDATE build_tags SET build_seq = (SELECT seq FROM builds WHERE builds.id = build_tags.build_id);
CREATE INDEX build_tags_kv_seq ON build_tags (key, value, build_seq);
DROP INDEX build_tags_kv;
CREATE TRIGGER build_tags_seq AFTER INSERT ON build_tags WHEN NEW.build_seq IS NULL
BEGIN
	UPDATE build_tags SET build_seq = (SELECT seq FROM builds WHERE builds.id = NEW.build_id)
	WHERE build_id = NEW.build_id AND pos = NEW.pos;
END;
