-- The mesh clock (PROTOCOL-MESH.md §13): one row per mesh. Ticks come
-- from the node named in `owner_node` only, by a conditional update of
-- the row (tick n → n + 1), so no tick number is emitted twice; a clock
-- whose owner left the node registry is taken over by another node.
CREATE TABLE mesh_clock (
    mesh_id      text PRIMARY KEY REFERENCES mesh(id) ON DELETE CASCADE,
    speed        int4 NOT NULL,
    paused       boolean NOT NULL,
    tick         int8 NOT NULL,
    sim_time     timestamptz NOT NULL,
    started_at   timestamptz NOT NULL,
    -- NULL while paused.
    next_tick_at timestamptz,
    owner_node   uuid
);
CREATE INDEX mesh_clock_owner ON mesh_clock (owner_node);
