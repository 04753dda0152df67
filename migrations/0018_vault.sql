-- The vault (PROTOCOL-MESH.md §10): opaque blobs per (mesh, member, key);
-- the broker never decrypts them.
CREATE TABLE vault_entry (
    mesh_id     text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    member_id   text NOT NULL,
    key         text NOT NULL,
    ciphertext  text NOT NULL,
    nonce       text NOT NULL,
    sealed_key  text NOT NULL,
    entry_type  text NOT NULL CHECK (entry_type IN ('env', 'file')),
    mount_path  text,
    description text,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (mesh_id, member_id, key)
);
