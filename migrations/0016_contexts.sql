-- Contexts (PROTOCOL-MESH.md §5): one per (mesh, member), replaced by
-- each share_context; the id stays the member's.
CREATE TABLE context (
    mesh_id      text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    member_id    text NOT NULL,
    id           uuid NOT NULL,
    peer_name    text NOT NULL,
    summary      text NOT NULL,
    files_read   jsonb NOT NULL DEFAULT '[]',
    key_findings jsonb NOT NULL DEFAULT '[]',
    tags         jsonb NOT NULL DEFAULT '[]',
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (mesh_id, member_id)
);
