-- Bus payloads too large for NOTIFY (Postgres refuses 8000 bytes or more),
-- such as a state_change carrying a large value: the sending node parks
-- the payload here and notifies its id; listeners read it by id. Rows are
-- dropped a minute later by the next park.
CREATE TABLE bus_payload (
    id         bigserial PRIMARY KEY,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bus_payload_created ON bus_payload (created_at);
