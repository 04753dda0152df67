-- Shared files (PROTOCOL-MESH.md §17). A row is reserved (`uploading`)
-- before its bytes flow, so the mesh quota counts uploads in progress; it
-- becomes `stored` once the blob is whole. Deleted and expired files keep
-- their row (soft delete) without a blob.
CREATE TABLE file (
    id              uuid PRIMARY KEY,
    mesh_id         text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    name            text NOT NULL,
    size            bigint NOT NULL,
    content_type    text,
    tags            jsonb NOT NULL DEFAULT '[]',
    uploader_member text NOT NULL,
    uploaded_by     text NOT NULL,
    persistent      boolean NOT NULL,
    expires_at      timestamptz,
    target_spec     text,
    encrypted       boolean NOT NULL,
    owner_pubkey    text,
    state           text NOT NULL CHECK (state IN ('uploading', 'stored')),
    created_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX file_mesh_live ON file (mesh_id, created_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX file_expiry ON file (expires_at) WHERE deleted_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX file_uploading ON file (created_at) WHERE state = 'uploading';

CREATE TABLE file_key (
    file_id     uuid NOT NULL REFERENCES file(id) ON DELETE CASCADE,
    peer_pubkey text NOT NULL,
    sealed_key  text NOT NULL,
    PRIMARY KEY (file_id, peer_pubkey)
);

CREATE TABLE file_access (
    file_id     uuid NOT NULL REFERENCES file(id) ON DELETE CASCADE,
    peer_name   text NOT NULL,
    accessed_at timestamptz NOT NULL
);
CREATE INDEX file_access_file ON file_access (file_id, accessed_at DESC);

-- The Postgres blob store: 1 MiB chunks under `<meshId>/<fileId>`,
-- written (all or nothing) in one transaction. No large objects, so the
-- broker's role needs no extra privileges.
CREATE TABLE file_blob (
    blob_key text NOT NULL,
    seq      integer NOT NULL,
    data     bytea NOT NULL,
    PRIMARY KEY (blob_key, seq)
);

-- Cluster-wide secrets made once by whichever node needs them first
-- (the download-link HMAC key).
CREATE TABLE broker_secret (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- Where each presence's socket came from, for `upload_auth = "peer_address"`
-- (uploads by clients that send no credential).
CREATE TABLE presence_addr (
    presence_id uuid PRIMARY KEY REFERENCES presence(id) ON DELETE CASCADE,
    addr        text NOT NULL
);
CREATE INDEX presence_addr_addr ON presence_addr (addr);
