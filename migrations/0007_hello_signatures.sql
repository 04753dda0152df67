-- Accepted hello and session_hello signatures (their SHA-256), each kept
-- until its hello's timestamp + 65 s, so a signature is accepted once
-- cluster-wide (PROTOCOL-SESSIONS.md §11).
CREATE TABLE hello_signature (
    hash   bytea PRIMARY KEY,
    until  timestamptz NOT NULL
);
CREATE INDEX hello_signature_until ON hello_signature (until);
