-- A presence's role (PROTOCOL-SESSIONS.md §4): `control-plane` for every
-- presence a `hello` made (all of them so far), `session` for those of a
-- `session_hello`. The one-live-presence rule holds within a role: a 1.37
-- CLI verb's `hello` carries the `sessionId` of the launched session it
-- runs in, and must not replace that session's presence.
ALTER TABLE presence ADD COLUMN role text NOT NULL DEFAULT 'control-plane'
    CHECK (role IN ('control-plane', 'session'));
DROP INDEX presence_one_live;
-- Invariant 2: one live or in-grace presence per (mesh, member, role, sessionId).
CREATE UNIQUE INDEX presence_one_live ON presence (mesh_id, member_id, role, session_id);
