-- Vectors (PROTOCOL-MESH.md §11): text points in named collections,
-- searched by ILIKE. No embeddings: like-for-like with the reference.
CREATE TABLE vector_point (
    id               uuid PRIMARY KEY,
    seq              bigserial NOT NULL,
    mesh_id          text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    collection       text NOT NULL,
    text             text NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}',
    stored_by_member text NOT NULL,
    stored_by_pubkey text NOT NULL,
    stored_at        timestamptz NOT NULL
);
CREATE INDEX vector_point_collection ON vector_point (mesh_id, collection, seq);
