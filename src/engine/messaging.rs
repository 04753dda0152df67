//! `send`: validate, route `targetSpec` against the cluster-wide presence
//! table, take a rate token and store the envelope with one delivery row
//! per recipient, all in one store transaction; then wake local
//! recipients. The broker never decodes `nonce` or `ciphertext`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::Duration;
use serde_json::json;
use uuid::Uuid;

use super::audit::Actor;
use super::Node;
use crate::cluster::bus::Signal;
use crate::protocol::frames::SendFrame;
use crate::protocol::target::{group_covers, is_base64, Priority, Target};
use crate::store::{Bucket, NewDelivery, NewMessage, Presence, SendResult, StoreError};

/// A refused send: the ack's code and sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRefusal {
    pub code: &'static str,
    pub sentence: String,
}

impl SendRefusal {
    fn new(code: &'static str, sentence: impl Into<String>) -> Self {
        Self {
            code,
            sentence: sentence.into(),
        }
    }
}

impl From<StoreError> for SendRefusal {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store failed during send");
        SendRefusal::new(
            "unavailable",
            "the broker cannot reach its database; nothing was stored",
        )
    }
}

/// Checks that need no IO. Returns the parsed target and priority.
pub fn validate(s: &SendFrame, max_bytes: usize) -> Result<(Target, Priority), SendRefusal> {
    let size = s.nonce.len() + s.ciphertext.len() + s.target_spec.len();
    if size > max_bytes {
        return Err(SendRefusal::new(
            "too_large",
            format!("message is {size} bytes; the limit is {max_bytes}"),
        ));
    }
    if s.target_spec.is_empty() {
        return Err(SendRefusal::new("bad_request", "targetSpec is empty"));
    }
    let target = Target::parse(&s.target_spec).ok_or_else(|| {
        SendRefusal::new(
            "bad_request",
            "targetSpec must be a 64-hex pubkey, @group, @all or *",
        )
    })?;
    let priority = match s.priority.as_deref() {
        None => Priority::Next,
        Some(p) => Priority::parse(p)
            .ok_or_else(|| SendRefusal::new("bad_request", "priority must be now, next or low"))?,
    };
    if !is_base64(&s.nonce) || !is_base64(&s.ciphertext) {
        return Err(SendRefusal::new(
            "bad_request",
            "nonce and ciphertext must be base64",
        ));
    }
    if s.id.len() > crate::protocol::limits::MAX_ID {
        return Err(SendRefusal::new("bad_request", "id is too long"));
    }
    Ok((target, priority))
}

/// The delivery rows for `target`, from the live and in-grace presences of
/// the sender's mesh. Empty for a direct send means `no_recipient`.
pub fn route(target: &Target, sender: &Presence, presences: &[Presence]) -> Vec<NewDelivery> {
    let others = presences
        .iter()
        .filter(|p| p.member_id != sender.member_id && p.visible);
    match target {
        Target::All => others.map(NewDelivery::to_session).collect(),
        Target::Group(name) => others
            .filter(|p| p.groups.iter().any(|g| group_covers(name, &g.name)))
            .map(NewDelivery::to_session)
            .collect(),
        Target::Key(key) => {
            if let Some(p) = presences
                .iter()
                .find(|p| p.session_pubkey.as_deref() == Some(key.as_str()) && p.id != sender.id)
            {
                return vec![NewDelivery::to_session(p)];
            }
            // A member key: any of its sessions may take it, but never the
            // sending session itself.
            match presences
                .iter()
                .find(|p| p.member_pubkey == *key && p.id != sender.id)
            {
                Some(p) => vec![NewDelivery {
                    recipient_member_id: p.member_id.clone(),
                    recipient_session: None,
                    exclude_session: (p.member_id == sender.member_id).then_some(sender.id),
                }],
                None => Vec::new(),
            }
        }
    }
}

impl Node {
    /// Handles one `send` from `sender`. `Ok` carries the message id.
    pub async fn send(&self, sender: &Presence, s: &SendFrame) -> Result<Uuid, SendRefusal> {
        let result = match tokio::time::timeout(super::DB_TIMEOUT, self.send_inner(sender, s)).await
        {
            Ok(r) => r,
            Err(_) => Err(SendRefusal::from(StoreError::Unavailable(
                "the database did not answer in time".into(),
            ))),
        };
        let label = match &result {
            Ok(_) => "queued",
            Err(r) => r.code,
        };
        self.metrics.message(label);
        if let Err(r) = &result {
            self.audit(
                &sender.mesh_id,
                "message_rejected",
                Some(Actor {
                    member_id: &sender.member_id,
                    name: &sender.display_name,
                }),
                json!({"code": r.code, "presence_id": sender.id}),
            );
        }
        result
    }

    async fn send_inner(&self, sender: &Presence, s: &SendFrame) -> Result<Uuid, SendRefusal> {
        let (target, priority) = validate(s, self.config.settings.max_message_bytes)?;
        if !self.db_up.load(Ordering::Relaxed) {
            // Fail fast while the heartbeat says the database is gone,
            // rather than holding the client for a connect timeout.
            self.store.ping().await.map_err(SendRefusal::from)?;
        }
        let presences = self.store.list_presences(&sender.mesh_id).await?;
        let deliveries = route(&target, sender, &presences);
        if deliveries.is_empty() && matches!(target, Target::Key(_)) {
            return Err(SendRefusal::new(
                "no_recipient",
                "no live or in-grace session matches that key",
            ));
        }
        let now = self.now();
        let settings = &self.config.settings;
        let message = NewMessage {
            id: Uuid::now_v7(),
            mesh_id: sender.mesh_id.clone(),
            sender_member_id: sender.member_id.clone(),
            sender_member_pubkey: sender.member_pubkey.clone(),
            sender_session_pubkey: sender.session_pubkey.clone(),
            target_spec: s.target_spec.clone(),
            priority,
            nonce: s.nonce.clone(),
            ciphertext: s.ciphertext.clone(),
            created_at: now,
            expires_at: now + Duration::seconds(settings.queue_ttl_seconds as i64),
        };
        let bucket = Bucket {
            key: sender.member_id.clone(),
            rate_per_min: settings.send_rate_per_min,
            burst: settings.send_burst,
        };
        match self
            .store
            .insert_message(&message, &deliveries, &bucket)
            .await?
        {
            SendResult::RateLimited => Err(SendRefusal::new(
                "rate_limit",
                format!(
                    "over the send budget of {} per minute (burst {})",
                    settings.send_rate_per_min, settings.send_burst
                ),
            )),
            SendResult::Queued => {
                self.wake_recipients(&deliveries, &presences);
                // Sizes only: the envelope itself never reaches the audit.
                self.audit(
                    &sender.mesh_id,
                    "message_sent",
                    Some(Actor {
                        member_id: &sender.member_id,
                        name: &sender.display_name,
                    }),
                    json!({
                        "message_id": message.id,
                        "target_kind": target.kind(),
                        "target_spec": s.target_spec,
                        "priority": priority.as_str(),
                        "size_bytes": s.nonce.len() + s.ciphertext.len(),
                        "recipients": deliveries.len(),
                    }),
                );
                Ok(message.id)
            }
        }
    }

    /// Wakes the sessions that may claim one of `deliveries`, wherever
    /// they live: one signal per node, not one per message.
    fn wake_recipients(&self, deliveries: &[NewDelivery], presences: &[Presence]) {
        let node_of: HashMap<Uuid, Uuid> = presences.iter().map(|p| (p.id, p.node_id)).collect();
        let mut sessions: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        let mut members: HashMap<Uuid, Vec<(String, String)>> = HashMap::new();
        for d in deliveries {
            match d.recipient_session {
                Some(id) => {
                    if let Some(node) = node_of.get(&id) {
                        sessions.entry(*node).or_default().push(id);
                    }
                }
                None => {
                    for p in presences
                        .iter()
                        .filter(|p| p.member_id == d.recipient_member_id)
                    {
                        members
                            .entry(p.node_id)
                            .or_default()
                            .push((p.mesh_id.clone(), p.member_id.clone()));
                    }
                }
            }
        }
        for (node, p) in sessions {
            self.signal(node, Signal::Wake { p });
        }
        for (node, m) in members {
            self.signal(node, Signal::WakeMember { m });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(target: &str, nonce: &str, ct: &str, prio: Option<&str>) -> SendFrame {
        SendFrame {
            id: "c".into(),
            target_spec: target.into(),
            priority: prio.map(String::from),
            nonce: nonce.into(),
            ciphertext: ct.into(),
        }
    }

    #[test]
    fn validation_codes() {
        assert_eq!(
            validate(&frame("*", "bm9uY2U=", "Y3Q=", None), 100)
                .unwrap()
                .1,
            Priority::Next
        );
        assert_eq!(
            validate(&frame("*", "a", &"b".repeat(99), None), 100)
                .unwrap_err()
                .code,
            "too_large"
        );
        assert_eq!(
            validate(&frame("", "a", "b", None), 100).unwrap_err().code,
            "bad_request"
        );
        assert_eq!(
            validate(&frame("bob", "a", "b", None), 100)
                .unwrap_err()
                .code,
            "bad_request"
        );
        assert_eq!(
            validate(&frame("*", "a", "b", Some("urgent")), 100)
                .unwrap_err()
                .code,
            "bad_request"
        );
        assert_eq!(
            validate(&frame("*", "a b", "b", None), 100)
                .unwrap_err()
                .code,
            "bad_request"
        );
        assert_eq!(
            validate(&frame("*", "a", "b", Some("now")), 100).unwrap().1,
            Priority::Now
        );
    }
}
