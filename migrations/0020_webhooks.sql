-- Inbound webhooks (PROTOCOL-MESH.md §9). The secret is kept as its
-- SHA-256 and its first 8 characters (for display), never in clear.
-- Deleting deactivates; a deleted name may be created again.
CREATE TABLE webhook (
    id                uuid PRIMARY KEY,
    mesh_id           text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    name              text NOT NULL,
    secret_hash       bytea NOT NULL,
    secret_prefix     text NOT NULL,
    created_by_member text NOT NULL,
    created_at        timestamptz NOT NULL,
    active            boolean NOT NULL DEFAULT true,
    deleted_at        timestamptz
);
CREATE UNIQUE INDEX webhook_active_name ON webhook (mesh_id, name) WHERE active;
