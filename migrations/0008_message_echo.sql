-- What a message's pushes carry beyond the envelope (PROTOCOL-SESSIONS.md
-- §6, §7): the sending presence's name, and the `send`'s
-- client_message_id, request_fingerprint and replyToId, echoed on every
-- push of it, redeliveries and copies included.
ALTER TABLE message
    ADD COLUMN sender_name text NOT NULL DEFAULT '',
    ADD COLUMN client_message_id text,
    ADD COLUMN request_fingerprint text,
    ADD COLUMN reply_to_id text;
