-- client_ack by clientMessageId (PROTOCOL-SESSIONS.md §5) finds the
-- message by its client id within the mesh; most messages carry none.
CREATE INDEX message_client_id ON message (mesh_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
