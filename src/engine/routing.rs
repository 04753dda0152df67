//! Routing a `send`: the checks that need no IO, `targetSpec` against the
//! live and in-grace presences of the sender's mesh, and which node to wake
//! for each delivery row. Pure: the batcher reads the presences and stores
//! the rows. The broker never decodes `nonce` or `ciphertext`.

use std::collections::HashMap;

use uuid::Uuid;

use super::dispatch::Refusal;
use super::signal::Signal;
use crate::protocol::messaging::SendFrame;
use crate::protocol::target::{group_covers, is_base64, Priority, Target};
use crate::store::{NewDelivery, Presence, RouteTarget};

/// Checks that need no IO. Returns the parsed target and priority.
pub fn validate(s: &SendFrame, max_bytes: usize) -> Result<(Target, Priority), Refusal> {
    let size = s.nonce.len() + s.ciphertext.len() + s.target_spec.len();
    if size > max_bytes {
        return Err(Refusal::new(
            "too_large",
            format!("message is {size} bytes; the limit is {max_bytes}"),
        ));
    }
    if s.target_spec.is_empty() {
        return Err(Refusal::new("bad_request", "targetSpec is empty"));
    }
    let target = Target::parse(&s.target_spec).ok_or_else(|| {
        Refusal::new(
            "bad_request",
            "targetSpec must be a 64-hex pubkey, @group, @all or *",
        )
    })?;
    let priority = match s.priority.as_deref() {
        None => Priority::Next,
        Some(p) => Priority::parse(p)
            .ok_or_else(|| Refusal::new("bad_request", "priority must be now, next or low"))?,
    };
    if !is_base64(&s.nonce) || !is_base64(&s.ciphertext) {
        return Err(Refusal::new(
            "bad_request",
            "nonce and ciphertext must be base64",
        ));
    }
    if s.id.len() > crate::protocol::limits::MAX_ID {
        return Err(Refusal::new("bad_request", "id is too long"));
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

/// Which node to wake for a delivery, from one presence read of the
/// batch's meshes: built once per batch, one lookup per delivery.
pub struct WakeRouter<'a> {
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
