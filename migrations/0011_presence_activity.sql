-- A presence's last activity (last frame or pong on its socket), for
-- `kick` / `disconnect` with `stale` (PROTOCOL-SESSIONS.md §9). The node
-- holding the socket writes it in batches with its heartbeat, so it lags
-- by up to node_heartbeat_seconds; NULL until the first batch after the
-- attach, whose time is last_seen_at.
ALTER TABLE presence ADD COLUMN last_active_at timestamptz;
