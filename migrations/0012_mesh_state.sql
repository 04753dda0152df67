-- Shared state (PROTOCOL-MESH.md §1): one JSON value per (mesh, key), the
-- last committed write wins. `updated_by` is the writer's member display
-- name at the time of the write; the member id is kept for permissions.
CREATE TABLE mesh_state (
    mesh_id           text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    key               text NOT NULL,
    value             jsonb NOT NULL,
    updated_by        text NOT NULL,
    updated_by_member text NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (mesh_id, key)
);
