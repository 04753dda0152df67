-- Skills (PROTOCOL-MESH.md §4): one per (mesh, name), updated in place
-- (created_at kept). author is the last writer's display name at the time.
CREATE TABLE skill (
    mesh_id       text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    name          text NOT NULL,
    description   text NOT NULL,
    instructions  text NOT NULL,
    tags          jsonb NOT NULL DEFAULT '[]',
    manifest      jsonb,
    author        text NOT NULL,
    author_member text NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (mesh_id, name)
);
