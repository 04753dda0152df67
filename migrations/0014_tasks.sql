-- Tasks (PROTOCOL-MESH.md §3). A claim is one conditional update
-- (status 'open' → 'claimed'), so of racing claims on any nodes exactly
-- one wins. `seq` orders tasks created in the same instant.
CREATE TABLE task (
    id                uuid PRIMARY KEY,
    seq               bigserial NOT NULL,
    mesh_id           text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    title             text NOT NULL,
    assignee          text,
    priority          text NOT NULL,
    status            text NOT NULL CHECK (status IN ('open', 'claimed', 'done')),
    tags              jsonb NOT NULL DEFAULT '[]',
    created_by        text NOT NULL,
    created_by_member text NOT NULL,
    claimed_by        text,
    claimed_by_member text,
    created_at        timestamptz NOT NULL,
    result            text
);
CREATE INDEX task_mesh ON task (mesh_id, created_at DESC, seq DESC);
