-- Memory (PROTOCOL-MESH.md §2): notes searched with Postgres full-text
-- search over a generated tsvector; forgetting is a soft delete.
CREATE TABLE memory (
    id                   uuid PRIMARY KEY,
    seq                  bigserial NOT NULL,
    mesh_id              text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    content              text NOT NULL,
    tags                 jsonb NOT NULL DEFAULT '[]',
    remembered_by        text NOT NULL,
    remembered_by_member text NOT NULL,
    remembered_at        timestamptz NOT NULL,
    forgotten_at         timestamptz,
    search_vector        tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED
);
CREATE INDEX memory_search ON memory USING gin (search_vector);
CREATE INDEX memory_mesh ON memory (mesh_id);
