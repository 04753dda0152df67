//! Message status in Postgres: the live message and its delivery rows,
//! and the records of the deliveries that ended.

use std::collections::BTreeMap;

use async_trait::async_trait;
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::*;

/// The messages of a mesh in an id range, live or recorded.
const FIND: &str = "
SELECT id, target_spec FROM (
  SELECT id, target_spec FROM message WHERE mesh_id = $1 AND id BETWEEN $2 AND $3
  UNION
  SELECT message_id, target_spec FROM delivery_record
  WHERE mesh_id = $1 AND message_id BETWEEN $2 AND $3) x
ORDER BY id LIMIT $4";

/// Each live row: who it names (the presence that holds or is addressed
/// by it, else the member) and whether someone is there to take it.
const LIVE: &str = "
SELECT d.message_id, coalesce(p.display_name, mb.display_name, ''),
       coalesce(p.session_pubkey, p.member_pubkey, mb.peer_pubkey, ''),
       CASE WHEN d.recipient_session IS NOT NULL
            THEN EXISTS (SELECT 1 FROM presence x WHERE x.id = d.recipient_session)
            ELSE EXISTS (SELECT 1 FROM presence x
                         WHERE x.mesh_id = d.mesh_id AND x.member_id = d.recipient_member_id)
       END
FROM delivery d
LEFT JOIN presence p ON p.id = coalesce(d.recipient_session, d.claimed_session)
LEFT JOIN member mb ON mb.id = d.recipient_member_id
WHERE d.message_id = ANY($1)
ORDER BY d.id";

const ENDED: &str = "
SELECT message_id, recipient_name, recipient_pubkey, delivered_at FROM delivery_record
WHERE message_id = ANY($1) AND mesh_id = $2";

#[async_trait]
impl MessageStatusStore for PgStore {
    async fn message_status(
        &self,
        mesh_id: &str,
        lo: Uuid,
        hi: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<MessageStatus>> {
        let c = self.client().await?;
        let rows = c
            .query(FIND, &[&mesh_id, &lo, &hi, &(limit as i64)])
            .await
            .map_err(map_err)?;
        let mut found: BTreeMap<Uuid, MessageStatus> = rows
            .iter()
            .map(|r| {
                let id: Uuid = r.get(0);
                let st = MessageStatus {
                    id,
                    target_spec: r.get(1),
                    recipients: Vec::new(),
                };
                (id, st)
            })
            .collect();
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = found.keys().copied().collect();
        for r in c.query(LIVE, &[&ids]).await.map_err(map_err)? {
            let st = found.get_mut(&r.get::<_, Uuid>(0)).expect("asked for");
            st.recipients.push(RecipientStatus {
                name: r.get(1),
                pubkey: r.get(2),
                outcome: if r.get(3) {
                    Outcome::Held
                } else {
                    Outcome::Disconnected
                },
            });
        }
        for r in c.query(ENDED, &[&ids, &mesh_id]).await.map_err(map_err)? {
            let st = found.get_mut(&r.get::<_, Uuid>(0)).expect("asked for");
            st.recipients.push(RecipientStatus {
                name: r.get(1),
                pubkey: r.get(2),
                outcome: r
                    .get::<_, Option<chrono::DateTime<chrono::Utc>>>(3)
                    .map_or(Outcome::Disconnected, Outcome::Delivered),
            });
        }
        let mut out: Vec<MessageStatus> = found.into_values().collect();
        for st in &mut out {
            order(&mut st.recipients);
        }
        Ok(out)
    }
}
