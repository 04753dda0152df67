-- What the broker remembers of a send after its envelope is gone
-- (PROTOCOL-SESSIONS.md §6 and §13 item 15), for
-- delivered_retention_seconds after the send. Neither table holds an
-- envelope.

-- Every accepted (mesh, sender member, client_message_id), whatever became
-- of its message. The primary key is what lets two racing repeats on two
-- nodes store one message: the send batch inserts here first, and only
-- the sends whose key went in store a message.
CREATE TABLE send_key (
    mesh_id           text NOT NULL,
    sender_member_id  text NOT NULL,
    client_message_id text NOT NULL,
    message_id        uuid NOT NULL,
    PRIMARY KEY (mesh_id, sender_member_id, client_message_id)
);
-- Swept by message id: ids are UUIDv7, so "sent before t" is an id range.
CREATE INDEX send_key_message ON send_key (message_id);

-- One row per delivery that ended: delivered (to whom, when) or expired
-- undelivered (delivered_at NULL). Written as the delivery row goes, with
-- the message's own fields copied in: the message row goes soon after.
CREATE TABLE delivery_record (
    message_id          uuid NOT NULL,
    mesh_id             text NOT NULL,
    sender_member_id    text NOT NULL,
    target_spec         text NOT NULL,
    client_message_id   text,
    created_at          timestamptz NOT NULL,
    recipient_member_id text NOT NULL,
    recipient_name      text NOT NULL,
    recipient_pubkey    text NOT NULL,
    delivered_at        timestamptz
);
CREATE INDEX delivery_record_message ON delivery_record (message_id);
