-- The web interface pages builds newest first (keyset on seq) filtered by
-- system, derivation name or agent; each filter gets an index that walks
-- its builds in seq order, so a page costs the same with a million builds.
-- (state has builds_state_seq, tags build_tags_kv.)
--
-- drv_name is the derivation's name: the base name without the hash and
-- ".drv" (/nix/store/<32 chars>-hello-2.12.drv → hello-2.12). A virtual
-- column: computed from derivation, never written, nothing to copy.
ALTER TABLE builds ADD COLUMN drv_name TEXT GENERATED ALWAYS AS (
	substr(derivation, length(rtrim(derivation, replace(derivation, '/', ''))) + 34,
		max(length(derivation) - length(rtrim(derivation, replace(derivation, '/', ''))) - 37, 0))
) VIRTUAL;
CREATE INDEX builds_name_seq ON builds (drv_name, seq);
-- system and drv_name never change after submission: these are written
-- once per build. agent_id changes at each allocation.
CREATE INDEX builds_system_seq ON builds (system, seq);
CREATE INDEX builds_agent_seq ON builds (agent_id, seq);
