-- The cluster's data model (DESIGN.md "Tables"). Every node reads and writes
-- these; no node keeps durable state of its own.

CREATE TABLE mesh (
    id            text PRIMARY KEY,
    slug          text NOT NULL UNIQUE,
    name          text NOT NULL,
    owner_pubkey  text NOT NULL,
    -- Signs invites; never leaves the broker except on explicit request.
    owner_secret  text NOT NULL,
    root_key      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE member (
    id              text PRIMARY KEY,
    mesh_id         text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    peer_pubkey     text NOT NULL,
    display_name    text NOT NULL,
    role            text NOT NULL CHECK (role IN ('admin', 'member')),
    default_groups  jsonb NOT NULL DEFAULT '[]',
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mesh_id, peer_pubkey)
);

CREATE TABLE invite (
    token       text PRIMARY KEY,
    mesh_id     text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('admin', 'member')),
    max_uses    integer NOT NULL CHECK (max_uses > 0),
    used_count  integer NOT NULL DEFAULT 0 CHECK (used_count >= 0 AND used_count <= max_uses),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE broker_node (
    id            uuid PRIMARY KEY,
    addr          text NOT NULL,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    draining      boolean NOT NULL DEFAULT false
);

CREATE TABLE presence (
    id                 uuid PRIMARY KEY,
    mesh_id            text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    member_id          text NOT NULL REFERENCES member(id) ON DELETE CASCADE,
    member_pubkey      text NOT NULL,
    node_id            uuid NOT NULL,
    -- The socket currently attached; a closing socket only releases the
    -- presence if it is still the one attached (replacement races).
    conn_id            uuid NOT NULL,
    session_id         text NOT NULL,
    session_pubkey     text,
    display_name       text NOT NULL,
    pid                bigint,
    cwd                text,
    hostname           text,
    peer_type          text,
    channel            text,
    model              text,
    capabilities       jsonb NOT NULL DEFAULT '[]',
    status             text NOT NULL CHECK (status IN ('idle', 'working', 'dnd')),
    status_source      text NOT NULL CHECK (status_source IN ('hook', 'manual', 'jsonl')),
    status_updated_at  timestamptz NOT NULL,
    summary            text,
    groups             jsonb NOT NULL DEFAULT '[]',
    visible            boolean NOT NULL DEFAULT true,
    profile            jsonb NOT NULL DEFAULT '{}',
    stats              jsonb,
    state              text NOT NULL CHECK (state IN ('online', 'grace', 'gone')),
    grace_until        timestamptz,
    hook_token_hash    bytea NOT NULL,
    connected_at       timestamptz NOT NULL,
    last_seen_at       timestamptz NOT NULL
);

-- Invariant 2: one non-gone presence per (mesh, member, sessionId).
CREATE UNIQUE INDEX presence_one_live ON presence (mesh_id, member_id, session_id)
    WHERE state <> 'gone';
CREATE INDEX presence_mesh_live ON presence (mesh_id) WHERE state <> 'gone';
CREATE INDEX presence_node ON presence (node_id) WHERE state = 'online';
CREATE INDEX presence_grace ON presence (grace_until) WHERE state = 'grace';
CREATE INDEX presence_cwd ON presence (cwd) WHERE state = 'online';
CREATE INDEX presence_working ON presence (status_updated_at) WHERE status = 'working';
CREATE INDEX presence_hook_token ON presence (hook_token_hash) WHERE state <> 'gone';

CREATE TABLE member_state (
    mesh_id       text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    member_id     text NOT NULL REFERENCES member(id) ON DELETE CASCADE,
    groups        jsonb NOT NULL DEFAULT '[]',
    profile       jsonb NOT NULL DEFAULT '{}',
    visible       boolean NOT NULL DEFAULT true,
    last_summary  text,
    last_seen_at  timestamptz NOT NULL,
    PRIMARY KEY (mesh_id, member_id)
);

CREATE TABLE message (
    id                     uuid PRIMARY KEY,
    mesh_id                text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    sender_member_id       text NOT NULL,
    sender_member_pubkey   text NOT NULL,
    sender_session_pubkey  text,
    target_spec            text NOT NULL,
    priority               text NOT NULL CHECK (priority IN ('now', 'next', 'low')),
    nonce                  text NOT NULL,
    ciphertext             text NOT NULL,
    created_at             timestamptz NOT NULL,
    expires_at             timestamptz NOT NULL
);
CREATE INDEX message_expires ON message (expires_at);

-- One row per recipient; deleted once delivered (written, or acked by a
-- client_ack session), so the table holds only what is still owed.
CREATE TABLE delivery (
    id                   bigserial PRIMARY KEY,
    message_id           uuid NOT NULL REFERENCES message(id) ON DELETE CASCADE,
    mesh_id              text NOT NULL,
    recipient_member_id  text NOT NULL,
    -- NULL: any session of the member may claim it (member-pubkey target).
    recipient_session    uuid,
    -- A member-addressed row the sending session itself must not claim.
    exclude_session      uuid,
    priority             text NOT NULL CHECK (priority IN ('now', 'next', 'low')),
    claimed_by           uuid,
    claimed_session      uuid,
    claim_until          timestamptz
);
CREATE INDEX delivery_session ON delivery (recipient_session, id)
    WHERE recipient_session IS NOT NULL;
CREATE INDEX delivery_member ON delivery (mesh_id, recipient_member_id, id)
    WHERE recipient_session IS NULL;
CREATE INDEX delivery_claimed ON delivery (claimed_session) WHERE claimed_session IS NOT NULL;
CREATE INDEX delivery_message ON delivery (message_id);
CREATE INDEX delivery_member_all ON delivery (recipient_member_id);

CREATE TABLE pending_status (
    pid         bigint NOT NULL,
    cwd         text NOT NULL,
    status      text NOT NULL CHECK (status IN ('idle', 'working', 'dnd')),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (pid, cwd)
);

CREATE TABLE rate_bucket (
    mesh_id     text NOT NULL,
    key         text NOT NULL,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (mesh_id, key)
);

CREATE TABLE audit_log (
    mesh_id          text NOT NULL,
    seq              bigint NOT NULL,
    event_type       text NOT NULL,
    actor_member_id  text,
    actor_name       text,
    payload          jsonb NOT NULL,
    prev_hash        text NOT NULL,
    hash             text NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (mesh_id, seq)
);

-- The head of each mesh's chain. Appends lock this row, which serialises
-- them per mesh across every node without holding anything in memory.
CREATE TABLE audit_tail (
    mesh_id  text PRIMARY KEY,
    seq      bigint NOT NULL,
    hash     text NOT NULL
);

-- After retention pruning, verification continues from here.
CREATE TABLE audit_checkpoint (
    mesh_id     text PRIMARY KEY,
    seq         bigint NOT NULL,
    hash        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_created ON audit_log (created_at);
