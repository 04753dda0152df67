-- A presence that ends is deleted, never kept as 'gone': that state was
-- never written, yet every presence query filtered on it and three
-- indexes were partial on it. The state is now online or grace only, and
-- those indexes cover every row (the queries no longer name the state,
-- so partial indexes would no longer match them).
DELETE FROM presence WHERE state = 'gone';
ALTER TABLE presence DROP CONSTRAINT presence_state_check;
ALTER TABLE presence ADD CONSTRAINT presence_state_check CHECK (state IN ('online', 'grace'));

DROP INDEX presence_one_live;
-- Invariant 2: one live or in-grace presence per (mesh, member, sessionId).
CREATE UNIQUE INDEX presence_one_live ON presence (mesh_id, member_id, session_id);
DROP INDEX presence_mesh_live;
CREATE INDEX presence_mesh ON presence (mesh_id);
DROP INDEX presence_hook_token;
CREATE INDEX presence_hook_token ON presence (hook_token_hash);
