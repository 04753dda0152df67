-- At-least-once delivery lives on the presence (PROTOCOL-SESSIONS.md §5):
-- set by a hello's `client_ack` capability, a session_hello, or the
-- presence's first client_ack, and kept across re-attach.
ALTER TABLE presence ADD COLUMN at_least_once boolean NOT NULL DEFAULT false;
UPDATE presence SET at_least_once = true WHERE capabilities ? 'client_ack';
