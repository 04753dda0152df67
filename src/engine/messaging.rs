//! `send`: validate, route `targetSpec` against the cluster-wide presence
//! table, take a rate token and store the envelope with one delivery row
//! per recipient, all in one store transaction; then wake local
//! recipients. The broker never decodes `nonce` or `ciphertext`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Duration;
use serde_json::json;
use uuid::Uuid;

use super::audit::Actor;
use super::Node;
use crate::cluster::bus::Signal;
use crate::protocol::frames::SendFrame;
use crate::protocol::target::{group_covers, is_base64, Priority, Target};
use tokio::sync::oneshot;

use super::batcher::SendJob;
use crate::store::{NewDelivery, NewMessage, Presence, RouteTarget, StoreError};

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
pub fn route(target: &Target, sender: &Presence, presences: &[RouteTarget]) -> Vec<NewDelivery> {
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
                    claim: None,
                }],
                None => Vec::new(),
            }
        }
    }
}

/// What a `send` resolves to: the message id, or the refusal.
pub type SendOutcome = Result<Uuid, SendRefusal>;

impl Node {
    /// Queues a `send` for the batcher. The receiver yields its outcome;
    /// outcomes of one session's sends resolve in submission order.
    pub async fn submit(
        &self,
        sender: Arc<Presence>,
        s: SendFrame,
    ) -> oneshot::Receiver<SendOutcome> {
        let (reply, rx) = oneshot::channel();
        match validate(&s, self.config.settings.max_message_bytes) {
            Err(r) => self.finish(&sender, Err(r), reply),
            Ok((target, priority)) => {
                let job = SendJob {
                    sender,
                    frame: s,
                    target,
                    priority,
                    reply,
                };
                if let Err(e) = self.send_queue.send(job).await {
                    // Only during shutdown: the batcher has stopped.
                    let job = e.0;
                    let refusal = SendRefusal::new("unavailable", "the node is shutting down");
                    self.finish(&job.sender, Err(refusal), job.reply);
                }
            }
        }
        rx
    }

    /// Records an outcome (metrics, audit of refusals) and hands it back.
    pub(super) fn finish(
        &self,
        sender: &Presence,
        outcome: SendOutcome,
        reply: oneshot::Sender<SendOutcome>,
    ) {
        let label = match &outcome {
            Ok(_) => "queued",
            Err(r) => r.code,
        };
        self.metrics.message(label);
        if let Err(r) = &outcome {
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
        let _ = reply.send(outcome);
    }

    /// The refusal for a member over its budget.
    pub(super) fn rate_limited(&self) -> SendRefusal {
        let s = &self.config.settings;
        SendRefusal::new(
            "rate_limit",
            format!(
                "over the send budget of {} per minute (burst {})",
                s.send_rate_per_min, s.send_burst
            ),
        )
    }

    /// The stored form of a job's message.
    pub(super) fn new_message(
        &self,
        job: &SendJob,
        now: chrono::DateTime<chrono::Utc>,
    ) -> NewMessage {
        let sender = &job.sender;
        NewMessage {
            id: Uuid::now_v7(),
            mesh_id: sender.mesh_id.clone(),
            sender_member_id: sender.member_id.clone(),
            sender_member_pubkey: sender.member_pubkey.clone(),
            sender_session_pubkey: sender.session_pubkey.clone(),
            target_spec: job.frame.target_spec.clone(),
            priority: job.priority,
            nonce: job.frame.nonce.clone(),
            ciphertext: job.frame.ciphertext.clone(),
            created_at: now,
            expires_at: now + Duration::seconds(self.config.settings.queue_ttl_seconds as i64),
        }
    }

    /// Audits a stored message: sizes only, never the envelope.
    pub(super) fn audit_sent(&self, job: &SendJob, message_id: Uuid, recipients: usize) {
        let sender = &job.sender;
        self.audit(
            &sender.mesh_id,
            "message_sent",
            Some(Actor {
                member_id: &sender.member_id,
                name: &sender.display_name,
            }),
            json!({
                "message_id": message_id,
                "target_kind": job.target.kind(),
                "target_spec": job.frame.target_spec,
                "priority": job.priority.as_str(),
                "size_bytes": job.frame.nonce.len() + job.frame.ciphertext.len(),
                "recipients": recipients,
            }),
        );
    }
}

/// Which node to wake for a delivery, from one presence read of the
/// batch's meshes: built once per batch, one lookup per delivery.
pub(super) struct WakeRouter<'a> {
    node_of: HashMap<Uuid, Uuid>,
    member_nodes: HashMap<(&'a str, &'a str), Vec<Uuid>>,
}

impl<'a> WakeRouter<'a> {
    pub fn new(presences: impl Iterator<Item = &'a RouteTarget>) -> Self {
        let mut node_of = HashMap::new();
        let mut member_nodes: HashMap<(&str, &str), Vec<Uuid>> = HashMap::new();
        for p in presences {
            node_of.insert(p.id, p.node_id);
            let nodes = member_nodes
                .entry((p.mesh_id.as_str(), p.member_id.as_str()))
                .or_default();
            if !nodes.contains(&p.node_id) {
                nodes.push(p.node_id);
            }
        }
        WakeRouter {
            node_of,
            member_nodes,
        }
    }

    /// The wake-ups for one message's unclaimed `deliveries`: one signal
    /// per node and kind, addressed to the sessions that may claim them.
    pub fn signals(&self, mesh_id: &str, deliveries: &[NewDelivery]) -> Vec<(Uuid, Signal)> {
        let mut sessions: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        let mut members: HashMap<Uuid, Vec<(String, String)>> = HashMap::new();
        for d in deliveries.iter().filter(|d| d.claim.is_none()) {
            match d.recipient_session {
                Some(id) => {
                    if let Some(node) = self.node_of.get(&id) {
                        sessions.entry(*node).or_default().push(id);
                    }
                }
                None => {
                    let key = (mesh_id, d.recipient_member_id.as_str());
                    for node in self.member_nodes.get(&key).into_iter().flatten() {
                        let pair = (mesh_id.to_string(), d.recipient_member_id.clone());
                        let pairs = members.entry(*node).or_default();
                        if !pairs.contains(&pair) {
                            pairs.push(pair);
                        }
                    }
                }
            }
        }
        let sessions = sessions
            .into_iter()
            .map(|(node, p)| (node, Signal::Wake { p }));
        let members = members
            .into_iter()
            .map(|(node, m)| (node, Signal::WakeMember { m }));
        sessions.chain(members).collect()
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
