//! Routing a `send`: the checks that need no IO, `targetSpec` against the
//! live and in-grace presences of the sender's mesh, and which node to wake
//! for each delivery row. Pure: the batcher reads the presences and stores
//! the rows. The broker never decodes `nonce` or `ciphertext`.

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

use super::dispatch::Refusal;
use super::signal::Signal;
use crate::protocol::messaging::SendFrame;
use crate::protocol::target::{group_covers, is_base64, Priority, Target};
use crate::protocol::Status;
use crate::store::{NewDelivery, PeerRole, Presence, RouteTarget};

/// Longest `client_message_id` and `request_fingerprint` (§6).
pub const MAX_CLIENT_ID: usize = 128;
/// Longest `replyToId` echoed (§6); longer ones are ignored.
pub const MAX_REPLY_TO: usize = 64;

/// A `send` that passed the checks needing no IO.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub target: Target,
    pub priority: Priority,
    pub client_message_id: Option<String>,
    pub request_fingerprint: Option<String>,
    pub reply_to_id: Option<String>,
}

/// Checks that need no IO. Every `bad_request` and `too_large` text holds
/// the word `invalid`: the 1.37 daemon retries a failed send unless its
/// error matches that (and a few other words none of the retryable codes
/// use).
pub fn validate(s: &SendFrame, max_bytes: usize) -> Result<Checked, Refusal> {
    let bad = |m: &str| Refusal::new("bad_request", format!("invalid {m}"));
    let size = s.nonce.len() + s.ciphertext.len() + s.target_spec.len();
    if size > max_bytes {
        return Err(Refusal::new(
            "too_large",
            format!("invalid size: {size} bytes > max_message_bytes {max_bytes}"),
        ));
    }
    if s.target_spec.is_empty() {
        return Err(bad("target: targetSpec is empty"));
    }
    if s.target_spec.starts_with('#') {
        return Err(bad("target: topics are not supported"));
    }
    let target = Target::parse(&s.target_spec)
        .ok_or_else(|| bad("target: targetSpec must be a 64-hex pubkey, @group, @all or *"))?;
    let priority = match s.priority.as_deref() {
        None => Priority::Next,
        Some(p) => Priority::parse(p).ok_or_else(|| bad("priority: must be now, next or low"))?,
    };
    if !is_base64(&s.nonce) || !is_base64(&s.ciphertext) {
        return Err(bad("envelope: nonce and ciphertext must be base64"));
    }
    if s.id.len() > crate::protocol::limits::MAX_ID {
        return Err(bad("id: too long"));
    }
    let bounded_string = |v: &Option<Value>, name: &str| match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(x)) if x.is_empty() => Ok(None),
        Some(Value::String(x)) if x.chars().count() <= MAX_CLIENT_ID => Ok(Some(x.clone())),
        Some(_) => Err(bad(&format!(
            "{name}: must be a string of at most {MAX_CLIENT_ID} characters"
        ))),
    };
    let client_message_id = bounded_string(&s.client_message_id, "client_message_id")?;
    let request_fingerprint = bounded_string(&s.request_fingerprint, "request_fingerprint")?;
    let reply_to_id = match &s.reply_to_id {
        Some(Value::String(x)) if !x.is_empty() && x.chars().count() <= MAX_REPLY_TO => {
            Some(x.clone())
        }
        _ => None,
    };
    Ok(Checked {
        target,
        priority,
        client_message_id,
        request_fingerprint,
        reply_to_id,
    })
}

/// The delivery rows for `target`, from the live and in-grace presences of
/// the sender's mesh. Empty for a direct send means `no_recipient`.
pub fn route(
    target: &Target,
    priority: Priority,
    sender: &Presence,
    presences: &[RouteTarget],
) -> Vec<NewDelivery> {
    let from = Sender {
        member_id: &sender.member_id,
        presence: Some(sender.id),
    };
    route_from(target, priority, from, presences)
}

/// Who a send comes from: a member, through one of its presences unless
/// the broker sends for it (a scheduled message).
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub member_id: &'a str,
    pub presence: Option<Uuid>,
}

/// [`route`], for a sender that may have no presence.
pub fn route_from(
    target: &Target,
    priority: Priority,
    sender: Sender<'_>,
    presences: &[RouteTarget],
) -> Vec<NewDelivery> {
    let not_sender = |p: &&RouteTarget| Some(p.id) != sender.presence;
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
                .filter(not_sender)
                .find(|p| p.session_pubkey.as_deref() == Some(key.as_str()))
            {
                return vec![NewDelivery::to_session(p)];
            }
            // A member key: one delivery any of its sessions may take, but
            // never the sending session itself; pinned to a presence that
            // acks, when one can take it now (PROTOCOL-SESSIONS.md §5), so
            // a short-lived socket that never acks cannot swallow it.
            let member = || {
                presences
                    .iter()
                    .filter(not_sender)
                    .filter(|p| p.member_pubkey == *key)
            };
            let acking = member()
                .filter(|p| p.at_least_once && p.online)
                .filter(|p| priority == Priority::Now || p.status == Status::Idle)
                .min_by_key(|p| p.role != PeerRole::ControlPlane);
            if let Some(p) = acking {
                return vec![NewDelivery::to_session(p)];
            }
            match member().next() {
                Some(p) => vec![NewDelivery {
                    recipient_member_id: p.member_id.clone(),
                    recipient_session: None,
                    exclude_session: sender.presence.filter(|_| p.member_id == sender.member_id),
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
    use serde_json::json;

    fn frame(target: &str, nonce: &str, ct: &str, prio: Option<&str>) -> SendFrame {
        SendFrame {
            id: "c".into(),
            target_spec: target.into(),
            priority: prio.map(String::from),
            nonce: nonce.into(),
            ciphertext: ct.into(),
            client_message_id: None,
            request_fingerprint: None,
            reply_to_id: None,
        }
    }

    #[test]
    fn refusals_have_their_codes_and_say_invalid() {
        let ok = validate(&frame("*", "bm9uY2U=", "Y3Q=", None), 100).unwrap();
        assert_eq!(ok.priority, Priority::Next);
        let now = validate(&frame("*", "a", "b", Some("now")), 100).unwrap();
        assert_eq!(now.priority, Priority::Now);
        let cases = [
            (frame("*", "a", &"b".repeat(99), None), "too_large"),
            (frame("", "a", "b", None), "bad_request"),
            (frame("bob", "a", "b", None), "bad_request"),
            (frame("#builds", "a", "b", None), "bad_request"),
            (frame("*", "a", "b", Some("urgent")), "bad_request"),
            (frame("*", "a b", "b", None), "bad_request"),
        ];
        for (f, code) in cases {
            let r = validate(&f, 100).unwrap_err();
            assert_eq!(r.code, code, "{f:?}");
            assert!(
                r.message.contains("invalid"),
                "the 1.37 daemon must not retry: {r:?}"
            );
        }
        let topic = validate(&frame("#builds", "a", "b", None), 100).unwrap_err();
        assert!(
            topic.message.contains("topics are not supported"),
            "{topic:?}"
        );
    }

    #[test]
    fn extras_are_checked_and_kept() {
        let with = |cm: Value, rf: Value, rt: Value| SendFrame {
            client_message_id: Some(cm),
            request_fingerprint: Some(rf),
            reply_to_id: Some(rt),
            ..frame("*", "a", "b", None)
        };
        let ok = validate(
            &with(json!("cm-1"), json!("f".repeat(64)), json!("r-1")),
            1000,
        )
        .unwrap();
        assert_eq!(ok.client_message_id.as_deref(), Some("cm-1"));
        assert_eq!(ok.request_fingerprint.as_deref().map(str::len), Some(64));
        assert_eq!(ok.reply_to_id.as_deref(), Some("r-1"));
        let empty = validate(&with(json!(""), json!(null), json!(5)), 1000).unwrap();
        assert_eq!(
            (empty.client_message_id, empty.reply_to_id),
            (None, None),
            "empty = absent; a bad replyToId is ignored"
        );
        for bad in [
            with(json!(7), json!(null), json!(null)),
            with(json!("x".repeat(129)), json!(null), json!(null)),
            with(json!(null), json!(["f"]), json!(null)),
        ] {
            let r = validate(&bad, 1000).unwrap_err();
            assert_eq!(r.code, "bad_request");
            assert!(r.message.contains("invalid"));
        }
        let long_reply =
            validate(&with(json!(null), json!(null), json!("r".repeat(65))), 1000).unwrap();
        assert_eq!(long_reply.reply_to_id, None);
    }
}
