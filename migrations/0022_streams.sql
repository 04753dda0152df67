-- Streams (PROTOCOL-MESH.md §14). The registry is decorative: publish and
-- subscribe work on any name. A subscription belongs to its presence row,
-- so it survives a re-attach (same row) and ends with the presence (the
-- row's deletion cascades), on whatever node either happens.
CREATE TABLE stream (
    id                uuid PRIMARY KEY,
    mesh_id           text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    name              text NOT NULL,
    created_by        text NOT NULL,
    created_by_member text NOT NULL,
    created_at        timestamptz NOT NULL,
    UNIQUE (mesh_id, name)
);

CREATE TABLE stream_subscription (
    mesh_id     text NOT NULL,
    stream      text NOT NULL,
    presence_id uuid NOT NULL REFERENCES presence(id) ON DELETE CASCADE,
    PRIMARY KEY (mesh_id, stream, presence_id)
);
CREATE INDEX stream_subscription_presence ON stream_subscription (presence_id);
