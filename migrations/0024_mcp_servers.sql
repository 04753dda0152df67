-- Peer-hosted MCP servers (PROTOCOL-MESH.md §15): one entry per (mesh,
-- serverName), shared by every node. The host presence's row going away
-- (it ended, on whatever node, by whatever path) clears `host_presence`;
-- the sweeper then drops non-persistent entries (announcing
-- `mcp_unregistered`) and stamps persistent ones with `offline_since`.
-- Reads treat an entry whose host is not online as offline at once.
CREATE TABLE mcp_server (
    mesh_id        text NOT NULL REFERENCES mesh(id) ON DELETE CASCADE,
    name           text NOT NULL,
    description    text NOT NULL,
    tools          jsonb NOT NULL,
    host_member    text NOT NULL,
    host_presence  uuid REFERENCES presence(id) ON DELETE SET NULL,
    hosted_by      text NOT NULL,
    persistent     boolean NOT NULL,
    offline_since  timestamptz,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (mesh_id, name)
);
CREATE INDEX mcp_server_host ON mcp_server (host_presence);
CREATE INDEX mcp_server_member ON mcp_server (mesh_id, host_member);
