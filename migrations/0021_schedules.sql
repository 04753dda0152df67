-- Scheduled messages (PROTOCOL-MESH.md §12). A due entry is fired by
-- whichever node locks it first (`FOR UPDATE SKIP LOCKED`), in the same
-- transaction as the message it sends and the entry's advance (cron) or
-- removal (one-shot): exactly once, whoever is still there. A cancel
-- deletes the row and so serializes with a fire on the row lock.
CREATE TABLE schedule (
    id            uuid PRIMARY KEY,
    mesh_id       text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    member_id     text NOT NULL,
    member_pubkey text NOT NULL,
    member_name   text NOT NULL,
    to_spec       text NOT NULL,
    -- The member a key target named when the entry was made: a key whose
    -- sessions have all ended still reaches its member.
    to_member_id  text,
    message       text NOT NULL,
    subtype       text,
    cron          text,
    next_at       timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    fired_count   int8 NOT NULL DEFAULT 0
);
CREATE INDEX schedule_due ON schedule (next_at);
CREATE INDEX schedule_member ON schedule (mesh_id, member_id, next_at);

-- A reminder's push carries `subtype`.
ALTER TABLE message ADD COLUMN subtype text;
