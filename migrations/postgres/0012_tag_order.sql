-- The builds page filtered by a tag walks the tag's builds newest first:
-- build_tags carries its build's seq (set on insert by a trigger, so no
-- writer has to know), and (key, value, build_seq) pages it by keyset like
-- the other filters, instead of sorting every build with that tag.
ALTER TABLE build_tags ADD COLUMN build_seq BIGINT;
UPDATE build_tags SET build_seq = builds.seq FROM builds WHERE builds.id = build_tags.build_id;
CREATE INDEX build_tags_kv_seq ON build_tags (key, value, build_seq);
DROP INDEX build_tags_kv;
CREATE FUNCTION build_tags_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.build_seq IS NULL THEN
		NEW.build_seq := (SELECT seq FROM builds WHERE id = NEW.build_id);
	END IF;
	RETURN NEW;
END;
$$;
CREATE TRIGGER build_tags_seq BEFORE INSERT ON build_tags FOR EACH ROW EXECUTE FUNCTION build_tags_seq();
